// Lifecycle misuse from inside the SDK's own calls: a policy hook that calls back into its cache
// (or throws) once a call's change is made, hooks run by dispose(), an abort while compressAsync()
// yields, and methods called on a disposed cache. A hook run after the change (afterStep,
// afterPrefill, afterCrop, clearState) cannot be undone: it runs for every row, and the call throws
// a ConfigError that says the change is in. Each test failed before the fix it names.
import { describe, expect, it } from 'vitest';
import { ConfigError, createCache, DisposedError, ReentrancyError, registerPolicy, ShadowKVCache, toFloat32, type Cache } from '../../packages/shadowkv/src/backend.js';
import type { StepRow } from '../../packages/shadowkv/src/backends/LayerStep.js';
import type { ShadowState } from '../../packages/shadowkv/src/policies/shadowkv/ShadowKVCache.js';
import { KitInputs } from '../../packages/shadowkv/src/testing/inputs.js';
import { forEachEnv } from '../envs.js';

const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 };
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

/** What a hook does once armed: `call` on the cache, after the hook's own work, the first `times` times. */
const armed: { hook?: string; call?: (c: Cache) => unknown; times: number; inner: unknown[] } = { times: 0, inner: [] };

/** A ShadowKV plugin whose hooks call back into their cache when armed (its bookkeeping done first, as a logging hook would). */
class Meddling extends ShadowKVCache {
  override readonly name = 'meddling' as never;
  private meddle(hook: string): void {
    if (armed.hook !== hook || armed.times <= 0 || !armed.call) return;
    armed.times -= 1;
    try {
      armed.call(this);
    } catch (err) {
      armed.inner.push(err);
      throw err;
    }
  }
  protected override afterStep(layer: number, seq: number, row: StepRow): void {
    super.afterStep(layer, seq, row);
    this.meddle('afterStep');
  }
  protected override afterPrefill(layer: number, seq: number): void {
    super.afterPrefill(layer, seq);
    this.meddle('afterPrefill');
  }
  protected override afterCrop(st: ShadowState): void {
    super.afterCrop(st);
    this.meddle('afterCrop');
  }
  protected override clearState(st: ShadowState): void {
    super.clearState(st);
    this.meddle('clearState');
  }
  protected override disposePolicy(): void {
    this.meddle('disposePolicy');
    super.disposePolicy();
  }
}
registerPolicy('meddling', (c, r) => new Meddling(c as never, r));

function arm(hook: string, call: (c: Cache) => unknown, times = 1): void {
  Object.assign(armed, { hook, call, times, inner: [] });
}
function disarm(): void {
  Object.assign(armed, { hook: undefined, call: undefined, times: 0 });
}

forEachEnv('hooks and callbacks that call back into their cache', (env) => {
  /** A Meddling cache and its twin, both with 2 rows of 60 tokens at both layers, compressed by a first step. */
  async function pair() {
    const make = () => createCache({ spec, batch: 2, policy: 'meddling' as never, dtype: env.dtype, backend: env.backend, options } as never) as Promise<Cache>;
    const [cache, twin] = [await make(), await make()];
    const inputs = new KitInputs(7, spec);
    for (let l = 0; l < 2; l++) {
      const prompt = inputs.prompt(2, 60);
      [cache, twin].forEach((c) => c.prefill(l, prompt));
    }
    for (let l = 0; l < 2; l++) {
      const step = inputs.step(2);
      [cache, twin].forEach((c) => c.decode(l, step));
    }
    return { cache, twin, inputs };
  }

  it('an afterStep that calls the cache on one row: every row takes its token and is compacted as the twin is; a ConfigError says the step went through', async () => {
    const { cache, twin, inputs } = await pair();
    // 30 steps pass a compaction (more than localTokens + maxRecentTokens exact tokens) on both rows.
    for (let t = 0; t < 30; t++) {
      const step = inputs.step(2);
      arm('afterStep', (c) => c.stats());
      expect(() => cache.decode(0, step)).toThrow(ConfigError);
      expect(armed.inner[0]).toBeInstanceOf(ReentrancyError);
      disarm();
      twin.decode(0, step);
    }
    expect(twin.stats().compactions).toBeGreaterThan(0);
    // Unarmed, it works on as the twin does.
    const next = inputs.step(2);
    expect(Array.from(toFloat32(cache.decode(0, next) as never))).toEqual(Array.from(toFloat32(twin.decode(0, next) as never)));
    expect(same(cache.save(), twin.save())).toBe(true);
    arm('afterStep', (c) => c.decode(1, inputs.step(2)));
    expect(() => cache.decode(1, inputs.step(2))).toThrow(/decode\(layer 1\): the call went through .*afterStep threw for sequence 0: ReentrancyError/);
    disarm();
    [cache, twin].forEach((c) => c.dispose());
  });

  it('an afterPrefill that throws on the first row of a continuation: both rows are compacted as the twin is; a ConfigError says the prefill went through', async () => {
    const { cache, twin, inputs } = await pair();
    const more = inputs.prompt(2, 40); // past localTokens + maxRecentTokens: the continuation compacts
    arm('afterPrefill', () => {
      throw new RangeError('hook failed');
    });
    expect(() => cache.prefill(0, more)).toThrow(/prefill\(layer 0\): the call went through .*afterPrefill threw for sequence 0: RangeError: hook failed/);
    disarm();
    twin.prefill(0, more);
    expect(same(cache.save(), twin.save())).toBe(true);
    const step = inputs.step(2);
    expect(Array.from(toFloat32(cache.decode(0, step) as never))).toEqual(Array.from(toFloat32(twin.decode(0, step) as never)));
    [cache, twin].forEach((c) => c.dispose());
  });

  it('an afterCrop that calls the cache: the row is cropped at every layer, not only the first', async () => {
    const { cache, twin } = await pair();
    arm('afterCrop', (c) => c.length(0));
    expect(() => cache.crop(1, 58)).toThrow(/crop\(1, 58\): the row is cropped to 58 tokens at every layer, but .*afterCrop threw for sequence 1: ReentrancyError/);
    disarm();
    twin.crop(1, 58);
    expect([cache.length(1, 0), cache.length(1, 1)]).toEqual([58, 58]);
    expect(same(cache.save(), twin.save())).toBe(true);
    [cache, twin].forEach((c) => c.dispose());
  });

  it('a clearState that calls the cache once its store is freed: every row named is emptied, and the next step runs (no wasm trap)', async () => {
    const { cache, twin, inputs } = await pair();
    arm('clearState', (c) => c.save());
    expect(() => cache.reset(1)).toThrow(/reset\(\): every row named is emptied, but .*clearState threw for sequence 1: ReentrancyError/);
    disarm();
    twin.reset(1);
    expect([cache.length(1, 0), cache.length(1, 1)]).toEqual([0, 0]);
    expect(same(cache.save(), twin.save())).toBe(true);
    for (let l = 0; l < 2; l++) {
      const step = inputs.step(2);
      expect(Array.from(toFloat32(cache.decode(l, step) as never))).toEqual(Array.from(toFloat32(twin.decode(l, step) as never)));
    }
    [cache, twin].forEach((c) => c.dispose());
  });

  it.each([
    ['disposePolicy', 'decode', (c: Cache) => c.decode(0, new KitInputs(1, spec).step(2))],
    ['disposePolicy', 'save', (c: Cache) => c.save()],
    ['clearState', 'prefill', (c: Cache) => c.prefill(0, new KitInputs(2, spec).prompt(2, 3))],
    ['clearState', 'dispose', (c: Cache) => c.dispose()],
  ] as const)('a %s that calls %s while dispose() frees the cache gets a ReentrancyError, and the cache ends disposed', async (hook, _, call) => {
    const { cache, twin } = await pair();
    arm(hook, call);
    expect(() => cache.dispose()).toThrow(/called while dispose\(\) is running/);
    disarm();
    expect(armed.inner[0]).toBeInstanceOf(ReentrancyError);
    expect(() => cache.length()).toThrow(DisposedError);
    expect(() => cache.dispose()).not.toThrow(); // a second dispose() is a no-op
    twin.dispose();
  });
}, (e) => e.name.startsWith('wasm'));

describe('compress on a disposed cache, and compressAsync stopped while it yields', () => {
  const make = async () => {
    const cache = await createCache({ spec, batch: 2, policy: 'shadowkv', dtype: 'f32', backend: 'wasm', options });
    const inputs = new KitInputs(3, spec);
    for (let l = 0; l < 2; l++) cache.prefill(l, inputs.prompt(2, 60));
    return cache;
  };

  it('compressAsync(): an abort while it yields before a pair stops it before that pair; nothing is compressed', async () => {
    const cache = await make();
    const stop = new AbortController();
    const call = cache.compressAsync({ signal: stop.signal });
    stop.abort(new RangeError('stopped'));
    await expect(call).rejects.toThrow('stopped');
    expect(cache.stats().compressions).toBe(0);
    // An abort from onProgress stops before the next pair, as before.
    const next = new AbortController();
    await expect(cache.compressAsync({ signal: next.signal, onProgress: () => next.abort() })).rejects.toThrow(/abort/i);
    expect(cache.stats().compressions).toBe(1);
    cache.dispose();
  });

  it.each([
    ['compress({ layrs: [0] })', (c: ShadowKVCache) => c.compress({ layrs: [0] } as never)],
    ['compress(null)', (c: ShadowKVCache) => c.compress(null as never)],
    ['compress("all")', (c: ShadowKVCache) => c.compress('all' as never)],
  ])('%s on a disposed cache is a DisposedError, not an option error', async (_, call) => {
    const cache = await make();
    cache.dispose();
    expect(() => call(cache)).toThrow(DisposedError);
    await expect(cache.compressAsync({ signal: 5 } as never)).rejects.toThrow(DisposedError);
  });
});
