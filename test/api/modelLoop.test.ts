import { describe, expect, it } from 'vitest';
import {
  CapacityError, ConfigError, createCache, DTypeError, FullKVCache, LayerIndexError, LLAMA3_8B, ready, ShadowKVCache, ShapeError,
} from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { f64, relError } from '../helpers/data.js';

// The calls a model loop needs: direct construction, row subsets, output buffers, per-layer
// lengths, rollback, strict options and defaults that fit the model.
const spec = { layers: 2, queryHeads: 8, kvHeads: 2, headDim: 32, rope: { theta: 10000 } };
const options = { budget: 64, rank: 24, chunkSize: 8, localTokens: 16, maxRecentTokens: 64, denseThreshold: 256 };
const bytes = (c: { save(): Uint8Array }) => Buffer.from(c.save());

describe('construction', () => {
  it('new ShadowKVCache({ spec, ...options }) works without createCache and matches it bit for bit', async () => {
    const direct = new ShadowKVCache({ spec, dtype: 'f32', ...options });
    const made = await createCache({ spec, dtype: 'f32', options });
    expect(direct.backendInfo.name).toBe('wasm');
    const work = new NeedleWorkload(spec, { tokens: 400, seed: 1 });
    for (let l = 0; l < 2; l++) {
      const prompt = work.prompt(l);
      for (const c of [direct, made]) c.prefill(l, prompt);
    }
    for (let t = 0; t < 3; t++) {
      for (let l = 0; l < 2; l++) {
        const input = work.step(l);
        expect(Array.from(direct.decode(l, input).data)).toEqual(Array.from(made.decode(l, input).data));
      }
    }
    direct.dispose();
    made.dispose();
  });

  it('ready() loads the runtime and says why; FullKVCache constructs on it', async () => {
    const info = await ready();
    expect(info.name).toBe('wasm');
    expect(info.reason).toMatch(/auto/);
    const full = new FullKVCache({ spec });
    expect(full.backendInfo.reason).toBe(info.reason);
    full.dispose();
  });

  it('createCache is typed by policy name', async () => {
    const cache = await createCache({ spec, policy: 'shadowkv', options });
    expect(cache.options.rank).toBe(24); // typed as ShadowKVCache: no cast
    expect(cache.compress()).toBe(0);
    cache.dispose();
  });
});

describe('strict options and defaults that fit the model', () => {
  it.each([
    ['a misspelt ShadowKV option', () => new ShadowKVCache({ spec, bugdet: 64 } as never), /unknown option 'bugdet'/],
    ['a misspelt createCache option', () => createCache({ spec, polcy: 'full' } as never), /unknown option 'polcy'/],
    ['a misspelt policy option', () => createCache({ spec, options: { rnak: 8 } as never }), /unknown option 'rnak'/],
    ['an option of another policy', () => createCache({ spec, policy: 'full', options: { budget: 64 } as never }), /unknown option 'budget'/],
    ['a cache option inside options', () => createCache({ spec, options: { batch: 2 } as never }), /'batch'/],
  ] as [string, () => unknown, RegExp][])('%s is a ConfigError naming it', async (_, make, message) => {
    await expect(Promise.resolve().then(make)).rejects.toThrow(ConfigError);
    await expect(Promise.resolve().then(make)).rejects.toThrow(message);
  });

  it('the default rank scales with the key width; a rank above it is a ConfigError', () => {
    expect(new ShadowKVCache({ spec: { ...LLAMA3_8B, layers: 1 } }).options.rank).toBe(160); // 5/32 of 8 x 128
    const narrow = { ...spec, kvHeads: 2, headDim: 64 }; // keys 128 wide
    expect(new ShadowKVCache({ spec: narrow }).options.rank).toBe(20);
    expect(() => new ShadowKVCache({ spec: narrow, rank: 160 })).toThrow(/rank 160 exceeds the key width kvHeads \* headDim = 128/);
    expect(new ShadowKVCache({ spec: narrow, rank: 128 }).options.rank).toBe(128);
  });

  it('scoreScale defaults to the attention scale, set apart from it', () => {
    expect(new ShadowKVCache({ spec }).options.scoreScale).toBeCloseTo(1 / Math.sqrt(32), 12);
    expect(new ShadowKVCache({ spec: { ...spec, scale: 0.1 } }).options.scoreScale).toBe(0.1);
    expect(new ShadowKVCache({ spec, scoreScale: 1 / Math.sqrt(128) }).options.scoreScale).toBe(1 / Math.sqrt(128));
    expect(() => new ShadowKVCache({ spec, scoreScale: 0 })).toThrow(ConfigError);
  });
});

describe('decode options', () => {
  it('a subset of rows decodes as if those rows were alone; the others sit the step out', async () => {
    const work = new NeedleWorkload(spec, { tokens: 300, seed: 2 });
    const batch = new ShadowKVCache({ spec, batch: 3, dtype: 'f32', ...options });
    const alone = [0, 1, 2].map(() => new ShadowKVCache({ spec, dtype: 'f32', ...options }));
    for (let l = 0; l < 2; l++) {
      for (let r = 0; r < 3; r++) {
        const prompt = work.prompt(l);
        batch.prefill(l, { ...prompt, sequences: [r] });
        alone[r]!.prefill(l, prompt);
      }
    }
    for (let t = 0; t < 4; t++) {
      const rows = t % 2 ? [2, 0] : [1];
      for (let l = 0; l < 2; l++) {
        const input = work.step(l, rows.length);
        const got = batch.decode(l, input, { sequences: rows });
        const n = spec.queryHeads * spec.headDim;
        rows.forEach((r, i) => {
          const one = (x: Float32Array) => ({ data: x.slice(i * x.length / rows.length, (i + 1) * x.length / rows.length), shape: [1, ...x.length === input.query.data.length ? [spec.queryHeads] : [spec.kvHeads], 1, spec.headDim], dtype: 'f32' as const });
          const want = alone[r]!.decode(l, { query: one(input.query.data as Float32Array), key: one(input.key.data as Float32Array), value: one(input.value.data as Float32Array) });
          expect(Array.from((got.data as Float32Array).subarray(i * n, (i + 1) * n))).toEqual(Array.from(want.data));
        });
      }
    }
    expect([0, 1, 2].map((r) => batch.length(r))).toEqual([302, 302, 302]);
    expect(batch.length(1)).toBe(alone[1]!.length());
    expect(() => batch.decode(0, work.step(0, 2), { sequences: [1, 1] })).toThrow(/repeat a row/);
    expect(() => batch.decode(0, work.step(0, 2), { sequences: [0] })).toThrow(ShapeError); // 2 input rows for 1 sequence
    [batch, ...alone].forEach((c) => c.dispose());
  });

  it('out receives the output (and is returned); a wrong out is a typed error that changes nothing', () => {
    const work = new NeedleWorkload(spec, { tokens: 300, seed: 3 });
    const a = new ShadowKVCache({ spec, dtype: 'f32', ...options });
    const b = new ShadowKVCache({ spec, dtype: 'f32', ...options });
    for (let l = 0; l < 2; l++) {
      const prompt = work.prompt(l);
      for (const c of [a, b]) c.prefill(l, prompt);
    }
    const out = new Float32Array(spec.queryHeads * spec.headDim);
    const input = work.step(0);
    const got = a.decode(0, input, { out });
    expect(got.data).toBe(out);
    expect(Array.from(out)).toEqual(Array.from(b.decode(0, input).data));
    const before = bytes(a);
    expect(() => a.decode(0, work.step(0), { out: new Uint16Array(out.length) })).toThrow(DTypeError);
    expect(() => a.decode(0, work.step(0), { out: new Float32Array(out.length + 1) })).toThrow(ShapeError);
    expect(bytes(a).equals(before)).toBe(true);
    a.dispose();
    b.dispose();
  });
});

describe('length and crop', () => {
  it('length(sequence, layer) counts each layer apart', () => {
    const cache = new FullKVCache({ spec, batch: 2 });
    const work = new NeedleWorkload(spec, { tokens: 50, seed: 4 });
    cache.prefill(0, work.prompt(0, 2));
    expect([cache.length(0, 0), cache.length(0, 1), cache.length(), cache.length(undefined, 1)]).toEqual([50, 0, 50, 0]);
    expect(() => cache.length(0, 2)).toThrow(LayerIndexError);
    cache.dispose();
  });

  it.each(['full', 'shadowkv'] as const)('%s: crop drops rejected draft tokens; decoding goes on as if they never came', (policy) => {
    const work = new NeedleWorkload(spec, { tokens: 400, seed: 5 });
    const make = () => (policy === 'full' ? new FullKVCache({ spec, dtype: 'f32' }) : new ShadowKVCache({ spec, dtype: 'f32', ...options }));
    const [draft, plain] = [make(), make()];
    for (let l = 0; l < 2; l++) {
      const prompt = work.prompt(l);
      for (const c of [draft, plain]) c.prefill(l, prompt);
    }
    const accepted = [0, 1].map(() => [0, 1].map((l) => work.step(l)));
    for (const step of accepted) step.forEach((input, l) => [draft, plain].forEach((c) => c.decode(l, input)));
    for (let t = 0; t < 3; t++) for (let l = 0; l < 2; l++) draft.decode(l, work.step(l)); // 3 draft tokens, rejected
    draft.crop(0, 402);
    expect([draft.length(0, 0), draft.length(0, 1)]).toEqual([402, 402]);
    for (let t = 0; t < 3; t++) {
      for (let l = 0; l < 2; l++) {
        const input = work.step(l);
        const [a, b] = [draft, plain].map((c) => f64(c.decode(l, input)));
        // Same tokens attended; only the order the selected chunks sit in may differ (f32 rounding).
        expect(relError(a!, b!)).toBeLessThan(1e-5);
      }
    }
    draft.dispose();
    plain.dispose();
  });

  it('cropping into the compressed prefix or past the end is a CapacityError that changes nothing', () => {
    const work = new NeedleWorkload(spec, { tokens: 400, seed: 6 });
    const cache = new ShadowKVCache({ spec, dtype: 'f32', ...options });
    for (let l = 0; l < 2; l++) cache.prefill(l, work.prompt(l));
    for (let l = 0; l < 2; l++) cache.decode(l, work.step(l)); // compresses: tokens [0, 384) are low-rank
    const before = bytes(cache);
    expect(() => cache.crop(0, 383)).toThrow(/only exact tokens can be cropped, so length must be >= 384/);
    expect(() => cache.crop(0, 402)).toThrow(CapacityError);
    expect(() => cache.crop(0, 1.5)).toThrow(CapacityError);
    expect(bytes(cache).equals(before)).toBe(true);
    cache.crop(0, 384);
    expect(cache.length(0, 1)).toBe(384);
    cache.dispose();
  });
});

describe('compressAsync', () => {
  it('compresses row by row between event-loop turns, reports progress, and stops when aborted', async () => {
    const work = new NeedleWorkload(spec, { tokens: 400, seed: 7 });
    const cache = new ShadowKVCache({ spec, batch: 2, dtype: 'f32', ...options });
    for (let l = 0; l < 2; l++) cache.prefill(l, work.prompt(l, 2));
    const progress: string[] = [];
    let ticks = 0;
    const timer = setInterval(() => (ticks += 1), 0);
    const controller = new AbortController();
    const done = cache.compressAsync({
      signal: controller.signal,
      onProgress: ({ done: n, total, layer, sequence }) => {
        progress.push(`${n}/${total} ${layer}:${sequence}`);
        expect(cache.stats().compressions).toBe(n); // calls are allowed between units
        if (n === 3) controller.abort();
      },
    });
    await expect(done).rejects.toThrow(/abort/i);
    clearInterval(timer);
    expect(progress).toEqual(['1/4 0:0', '2/4 0:1', '3/4 1:0']);
    expect(ticks).toBeGreaterThanOrEqual(2); // the event loop ran between units
    expect(await cache.compressAsync()).toBe(1); // the rest
    expect(cache.compress()).toBe(0);
    cache.dispose();
  });
});
