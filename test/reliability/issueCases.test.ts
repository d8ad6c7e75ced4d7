import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import {
  ConfigError, createCache, DisposedError, DTypeError, estimateMemory, FullKVCache, LayerIndexError, loadCache, NonFiniteError, OutOfMemoryError,
  ReentrancyError, SequenceIndexError, ShadowKVCache, ShapeError, SnapshotError, type Tensor,
} from '../../packages/shadowkv/src/backend.js';
import { crc32 } from '../../packages/shadowkv/src/snapshot.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { faults, registerFaultyWasm } from '../helpers/backends.js';
import { f64 } from '../helpers/data.js';

// Every case the reliability issue quotes, as a test. test/adversarial/ tries their classes at random.
const spec = { layers: 2, queryHeads: 8, kvHeads: 2, headDim: 32, rope: { theta: 10000 } };
const options = { budget: 64, rank: 24, chunkSize: 8, localTokens: 16, maxRecentTokens: 64, denseThreshold: 64 };
const bytes = (c: { save(): Uint8Array }) => Buffer.from(c.save());
const packr = new Packr({ moreTypes: true, structuredClone: false, useRecords: false });
/** A cache's memory but the device's scratch buffers (its own, reused by the next op, kept after a failed one). */
const held = (m: ReturnType<ShadowKVCache['memory']>) => {
  const { scratch = 0, ...components } = m.components;
  return { device: m.device - scratch, host: m.host, components };
};

/** A compressed f32 cache of 101 tokens per row (one row dense) and its snapshot content. */
function filled(dtype: 'f32' | 'bf16' = 'f32') {
  const cache = new ShadowKVCache({ spec, batch: 2, dtype, ...options });
  const work = new NeedleWorkload(spec, { tokens: 100, seed: 1 });
  for (let l = 0; l < 2; l++) cache.prefill(l, work.prompt(l, 2));
  for (let l = 0; l < 2; l++) cache.decode(l, work.step(l, 2));
  return { cache, work };
}

/** Snapshot bytes after `edit` changed the decoded content, with a recomputed checksum. */
function edited(saved: Uint8Array, edit: (content: Record<string, any>) => void): Uint8Array {
  const envelope = packr.unpack(saved) as { payload: Uint8Array } & Record<string, unknown>;
  const content = packr.unpack(envelope.payload) as Record<string, any>;
  edit(content);
  const payload = new Uint8Array(packr.pack(content));
  return new Uint8Array(packr.pack({ ...envelope, payload, crc32: crc32(payload) }));
}

describe('snapshots with a valid checksum are checked to the last field', () => {
  const { cache } = filled();
  const saved = cache.save();
  it.each([
    ['a Float64Array where tail.k belongs', (c: any) => (c.layers[0][0].tail.k = new Float64Array(c.layers[0][0].tail.k.length))],
    ['an over-long landmarks array', (c: any) => (c.layers[0][0].store.heads[0].landmarks = new Float32Array(c.layers[0][0].store.heads[0].landmarks.length + 32 * 5))],
    ['dtype flipped f32 -> bf16', (c: any) => (c.cache.dtype = 'bf16')],
    ["policy changed to 'full'", (c: any) => (c.policy = 'full')],
    ['store.tokens changed', (c: any) => (c.layers[1][0].store.tokens += 8)],
    ['a landmark id out of range', (c: any) => (c.layers[0][0].store.heads[1].landmarkIds[0] = 999)],
    ['a selected chunk that is no landmark', (c: any) => (c.layers[0][0].store.heads[0].selected[0] = c.layers[0][0].store.heads[0].outlierIds[0])],
    ['a NaN in the values', (c: any) => (c.layers[0][0].store.heads[0].values[3] = NaN)],
    ['length beyond the stored tokens', (c: any) => (c.layers[0][1].length += 1)],
  ])('%s is a SnapshotError', async (_, edit) => {
    await expect(loadCache(edited(saved, edit))).rejects.toThrow(SnapshotError);
  });

  it('a small snapshot that records a huge spec is rejected at once, before anything is allocated', async () => {
    const huge = edited(saved, (c) => Object.assign(c.spec, { layers: 1000, kvHeads: 64, queryHeads: 64, headDim: 256 }));
    expect(huge.length).toBeLessThan(1_000_000);
    const t0 = performance.now();
    await expect(loadCache(huge)).rejects.toThrow(SnapshotError);
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  it('the unedited snapshot restores and continues', async () => {
    const restored = await loadCache(saved);
    expect(bytes(restored).equals(Buffer.from(saved))).toBe(true);
    restored.dispose();
  });
});

describe('a failure during compression changes nothing and wedges nothing', () => {
  it.each([['budget', { budget: 2 ** 40 }], ['outlierChunks', { outlierChunks: 2 ** 30 }]])('%s too large for any runtime is a ConfigError at creation', (_, bad) => {
    expect(() => new ShadowKVCache({ spec, ...options, ...bad })).toThrow(ConfigError);
  });

  it('a key width the runtime cannot factor (kvHeads x headDim = 32768) is a ConfigError at creation', () => {
    expect(() => new ShadowKVCache({ spec: { ...spec, queryHeads: 256, kvHeads: 256, headDim: 128 } })).toThrow(/key width/);
  });

  it('out of memory while compressing: a typed error, the row as it was, no leak, and the next try works', async () => {
    const backend = registerFaultyWasm();
    const cache = await createCache({ spec, dtype: 'f32', backend, options });
    const work = new NeedleWorkload(spec, { tokens: 100, seed: 2 });
    for (let l = 0; l < 2; l++) cache.prefill(l, work.prompt(l));
    const before = bytes(cache);
    const memory = cache.memory();
    faults.fail = (tag) => tag === 'outliers'; // compression fails half-way through building the store
    for (let i = 0; i < 10; i++) expect(() => cache.decode(0, work.step(0))).toThrow(OutOfMemoryError);
    faults.fail = undefined;
    expect(bytes(cache).equals(before)).toBe(true);
    expect(cache.length(0)).toBe(100);
    expect(held(cache.memory())).toEqual(held(memory));
    cache.decode(0, work.step(0));
    expect(cache.stats().compressions).toBe(1);
    expect(cache.length(0)).toBe(101);
    cache.dispose();
  });
});

// The class of the case above: whichever allocation of a compressing decode step fails (the
// store's, the pre-RoPE keys', the factors', the landmark temporaries', the step's own), the step
// throws OutOfMemoryError, nothing is left allocated, and the next try gives the outputs a step
// without the failure gives. A failure inside the compression leaves the cache as it was; one in the
// step's own first allocations, after the compression, keeps the compressed row (docs/guide.md);
// one in the tail's shrink after compression is absorbed (it keeps the larger buffers). On f32 and
// bf16.
describe('out of memory at each allocation of a compressing step', () => {
  it.each(['f32', 'bf16'] as const)('%s: a failure at each allocation in turn is a typed error, leaks nothing, and the next try is as without it', async (dtype) => {
    const backend = registerFaultyWasm();
    const work = new NeedleWorkload(spec, { tokens: 100, seed: 6 });
    const prompt = work.prompt(0);
    const steps = [work.step(0), work.step(0)];
    const make = async () => {
      const cache = await createCache({ spec: { ...spec, layers: 1 }, dtype, backend, options });
      cache.prefill(0, prompt);
      return cache;
    };
    // How many allocations the compressing step makes, and what two steps give without a failure.
    const probe = await make();
    let made = 0;
    faults.fail = () => (made++, false);
    const first = Array.from(f64(probe.decode(0, steps[0]!)));
    faults.fail = undefined;
    expect(probe.stats().compressions).toBe(1);
    const second = Array.from(f64(probe.decode(0, steps[1]!)));
    probe.dispose();
    expect(made).toBeGreaterThan(20);
    const outcomes = { threw: 0, absorbed: 0, kept: 0 };
    for (let n = 0; n < made; n++) {
      const what = `allocation ${n} of ${made}`;
      const cache = await make();
      const before = bytes(cache);
      const memory = held(cache.memory());
      let seen = 0;
      faults.fail = () => seen++ === n;
      let out: number[] | undefined;
      try {
        out = Array.from(f64(cache.decode(0, steps[0]!)));
      } catch (err) {
        expect(err, what).toBeInstanceOf(OutOfMemoryError);
      } finally {
        faults.fail = undefined;
      }
      if (out) {
        outcomes.absorbed++;
        expect(out, `${what}: absorbed, the same outputs`).toEqual(first);
      } else if (cache.stats().compressions === 0) {
        outcomes.threw++;
        expect(bytes(cache).equals(before), `${what}: the row as it was`).toBe(true);
        expect(held(cache.memory()), `${what}: nothing left allocated`).toEqual(memory);
        expect(Array.from(f64(cache.decode(0, steps[0]!))), `${what}: the next try`).toEqual(first);
      } else {
        outcomes.kept++;
        expect(cache.length(0), `${what}: no token appended`).toBe(100);
        expect(Array.from(f64(cache.decode(0, steps[0]!))), `${what}: the next try`).toEqual(first);
      }
      expect(cache.stats().compressions).toBe(1);
      expect(Array.from(f64(cache.decode(0, steps[1]!))), `${what}: the step after`).toEqual(second);
      cache.dispose();
    }
    expect(outcomes.threw).toBeGreaterThan(20); // most allocations are the compression's, and roll back
    expect(outcomes.kept).toBeLessThan(5);
  });
});

describe('values that do not fit their storage', () => {
  const work = new NeedleWorkload(spec, { tokens: 20, seed: 3 });
  const scaled = (t: Tensor, i: number, v: number): Tensor => {
    const data = (t.data as Float32Array).slice();
    data[i] = v;
    return { ...t, data };
  };
  it.each([
    ['70000 into f16', 'f16', 70000, 'values'],
    ['3.4e38 into bf16', 'bf16', 3.4e38, 'values'],
    ['a key of 60000 into f16 (RoPE could rotate it past 65504)', 'f16', 60000, 'keys'],
  ] as const)('%s is a NonFiniteError naming the element, the cache unchanged', (_, dtype, value, which) => {
    const cache = new FullKVCache({ spec, dtype });
    const prompt = work.prompt(0);
    const before = bytes(cache);
    expect(() => cache.prefill(0, { ...prompt, [which]: scaled(prompt[which], 5, value) })).toThrow(`${which}[5] is ${Math.fround(value)}`);
    expect(() => cache.prefill(0, { ...prompt, [which]: scaled(prompt[which], 5, value) })).toThrow(NonFiniteError);
    expect(bytes(cache).equals(before)).toBe(true);
    cache.dispose();
  });

  it('keys of 1e30 keep shadowkv finite after compression, as they keep full', () => {
    const big = new NeedleWorkload(spec, { tokens: 200, seed: 4 });
    const shadow = new ShadowKVCache({ spec, dtype: 'f32', ...options });
    const full = new FullKVCache({ spec, dtype: 'f32' });
    const prompt = big.prompt(0);
    const keys = { ...prompt.keys, data: Float32Array.from(prompt.keys.data as Float32Array, (x) => x * 1e30) };
    for (const c of [shadow, full]) c.prefill(0, { keys, values: prompt.values });
    for (let t = 0; t < 3; t++) {
      const input = big.step(0);
      const a = f64(shadow.decode(0, input));
      const b = f64(full.decode(0, input));
      expect(b.every(Number.isFinite)).toBe(true);
      expect(a.every(Number.isFinite)).toBe(true);
    }
    expect(shadow.stats().compressions).toBe(1);
    shadow.dispose();
    full.dispose();
  });

  it.each([
    ['scale 1e38', { ...spec, scale: 1e38 }],
    ['a RoPE scaling factor of 1e-310', { ...spec, rope: { theta: 10000, scaling: { factor: 1e-310, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64 } } }],
  ])('%s is a ConfigError', (_, bad) => {
    expect(() => new FullKVCache({ spec: bad })).toThrow(ConfigError);
  });
});

describe('re-entrant calls and inputs read once', () => {
  const work = new NeedleWorkload(spec, { tokens: 20, seed: 5 });
  it.each(['decode', 'dispose', 'prefill'] as const)('%s from inside prefill (a getter of its input) is a ReentrancyError; the outer call is unaffected', (inner) => {
    const cache = new FullKVCache({ spec, dtype: 'f32' });
    const reference = new FullKVCache({ spec, dtype: 'f32' });
    const prompt = work.prompt(0);
    let caught: unknown;
    const input = {
      get keys() {
        try {
          if (inner === 'decode') cache.decode(0, work.step(0));
          else if (inner === 'dispose') cache.dispose();
          else cache.prefill(0, prompt);
        } catch (err) {
          caught = err;
        }
        return prompt.keys;
      },
      values: prompt.values,
    };
    cache.prefill(0, input);
    reference.prefill(0, prompt);
    expect(caught).toBeInstanceOf(ReentrancyError);
    expect(bytes(cache).equals(bytes(reference))).toBe(true);
    cache.dispose();
    reference.dispose();
  });

  it('input that changes between reads: what was validated is what is stored', () => {
    const cache = new FullKVCache({ spec, dtype: 'f32' });
    const reference = new FullKVCache({ spec, dtype: 'f32' });
    const prompt = work.prompt(0);
    const other = work.prompt(0);
    let reads = 0;
    cache.prefill(0, { get keys() { return reads++ === 0 ? prompt.keys : other.keys; }, values: prompt.values });
    reference.prefill(0, prompt);
    expect(reads).toBe(1);
    expect(bytes(cache).equals(bytes(reference))).toBe(true);
    cache.dispose();
    reference.dispose();
  });
});

describe('typed errors for every malformed argument', () => {
  const work = new NeedleWorkload(spec, { tokens: 20, seed: 6 });
  it.each([
    ['shape: {}', (c: FullKVCache) => c.prefill(0, { ...work.prompt(0), keys: { ...work.prompt(0).keys, shape: {} as never } }), ShapeError],
    ['layer: Symbol()', (c: FullKVCache) => c.prefill(Symbol() as never, work.prompt(0)), LayerIndexError],
    ['sequences: 1', (c: FullKVCache) => c.prefill(0, { ...work.prompt(0), sequences: 1 as never }), SequenceIndexError],
    ['decode options: 5', (c: FullKVCache) => c.decode(0, work.step(0), 5 as never), ShapeError],
    ['data a plain array', (c: FullKVCache) => c.prefill(0, { ...work.prompt(0), values: { ...work.prompt(0).values, data: [1, 2] as never } }), DTypeError],
  ] as const)('%s', (_, call, ErrorClass) => {
    const cache = new FullKVCache({ spec });
    const before = bytes(cache);
    expect(() => call(cache)).toThrow(ErrorClass);
    try {
      call(cache);
    } catch (err) {
      expect((err as { code?: string }).code).toMatch(/^SKV_/);
    }
    expect(bytes(cache).equals(before)).toBe(true);
    cache.dispose();
  });

  it('batch 2**32 + 1 is a ConfigError', () => {
    expect(() => new FullKVCache({ spec, batch: 2 ** 32 + 1 })).toThrow(ConfigError);
  });

  it.each([['negative tokens', { tokens: -1 }], ['NaN tokens', { tokens: NaN }], ['an unknown policy', { tokens: 10, policy: 'h2o' }]])('estimateMemory with %s is a ConfigError', (_, q) => {
    expect(() => estimateMemory({ spec, ...(q as { tokens: number }) })).toThrow(ConfigError);
  });

  it('estimateMemory is exact for the tail of a compressed row', () => {
    const { cache, work: w } = filled('bf16');
    for (let t = 0; t < 60; t++) for (let l = 0; l < 2; l++) cache.decode(l, w.step(l, 2));
    const estimate = estimateMemory({ spec, tokens: 100, batch: 2, dtype: 'bf16', options });
    expect(cache.memory().components.exactTail).toBe(estimate.components.exactTail);
    cache.dispose();
  });

  it('stats() and selection() after dispose() are DisposedErrors; save() returns bytes of its own', () => {
    const { cache } = filled();
    const a = cache.save();
    const b = cache.save();
    expect(a.byteOffset).toBe(0);
    expect(a.buffer.byteLength).toBe(a.length);
    expect(a.buffer).not.toBe(b.buffer);
    cache.dispose();
    expect(() => cache.stats()).toThrow(DisposedError);
    expect(() => cache.selection(0, 0, 0)).toThrow(DisposedError);
  });
});
