// The SDK as a server with many requests in flight uses it: many caches alive on one backend with
// their calls interleaved across awaits, calls on a cache while its compressAsync() yields, the
// registries under concurrent createCache, and the AbortSignal contract of every async call (an
// aborted signal rejects with its reason, at once, and leaves nothing behind). No test may leave an
// unhandled rejection. Each test failed before its fix unless it says it locks in behaviour.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  ConfigError, createCache, createWasmBackend, createWasmBackendSync, DisposedError, FullKVCache, listBackends, loadCache, ready, registerBackend, resolveBackend, SnapshotError, toFloat32,
  type Backend, type ShadowKVCache, type Tensor,
} from '../../packages/shadowkv/src/backend.js';
import { KitInputs } from '../../packages/shadowkv/src/testing/inputs.js';
import { forEachEnv, type TestEnv } from '../envs.js';

const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 };
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));
const tick = (ms = 0) => new Promise<void>((resolve) => setTimeout(resolve, ms));
/** How a promise settles within `ms` ('pending' if it has not). */
const settled = (p: Promise<unknown>, ms = 200) =>
  Promise.race([p.then((v) => ({ value: v }), (err: unknown) => ({ err })), tick(ms).then(() => 'pending' as const)]);

// Every rejection in this file must be handled by a caller.
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
beforeAll(() => void process.on('unhandledRejection', onUnhandled));
afterAll(() => void process.off('unhandledRejection', onUnhandled));
afterEach(async () => {
  await tick(20);
  expect(unhandled.splice(0)).toEqual([]);
});

/** A ShadowKV cache of 2 rows of 100 tokens at both layers, none compressed yet (4 pairs due). */
async function due(env: Pick<TestEnv, 'backend' | 'dtype'> = { backend: 'wasm', dtype: 'f32' }, seed = 5) {
  const cache = await createCache({ spec, batch: 2, policy: 'shadowkv', dtype: env.dtype, backend: env.backend, options });
  const inputs = new KitInputs(seed, spec);
  for (let l = 0; l < 2; l++) cache.prefill(l, inputs.prompt(2, 100));
  return { cache, inputs };
}

/** The decode steps a request makes: `steps` tokens through both layers, outputs as f32. */
function decodeSteps(cache: ShadowKVCache, steps: { query: Tensor; key: Tensor; value: Tensor }[]): Float32Array[] {
  return steps.flatMap((s) => [0, 1].map((l) => toFloat32(cache.decode(l, s) as never).slice()));
}

forEachEnv('many caches on one backend, their calls interleaved across awaits', (env) => {
  it('each cache ends as it ends alone (outputs and save bytes); a decode while compressAsync yields compresses its rows first and is not counted; a cache disposed mid-way stops with a DisposedError', async () => {
    const N = 5;
    const script = (seed: number) => {
      const inputs = new KitInputs(1000 + seed, spec);
      return Array.from({ length: 3 }, () => inputs.step(2));
    };
    // Alone: compress everything, then decode.
    const alone: { outputs: Float32Array[]; bytes: Uint8Array }[] = [];
    for (let i = 0; i < N; i++) {
      const { cache } = await due(env, i);
      expect(await cache.compressAsync()).toBe(4);
      alone.push({ outputs: decodeSteps(cache, script(i)), bytes: cache.save() });
      cache.dispose();
    }
    // Together: every compressAsync in flight at once, each decoding its first token from onProgress,
    // saving and restoring a twin mid-way; one extra cache disposed while its compressAsync yields.
    const caches = await Promise.all(Array.from({ length: N }, (_, i) => due(env, i).then(({ cache }) => cache)));
    const victim = (await due(env, 99)).cache;
    const outputs: Float32Array[][] = caches.map(() => []);
    const twins: Promise<unknown>[] = [];
    const runs = caches.map((cache, i) => {
      const steps = script(i);
      return cache.compressAsync({
        onProgress: async ({ done }) => {
          await tick(i % 3);
          if (done === 1) {
            const mid = cache.save();
            twins.push(loadCache(mid, { backend: env.backend }).then((twin) => (expect(same(twin.save(), mid)).toBe(true), twin.dispose())));
            outputs[i]!.push(...decodeSteps(cache, steps.slice(0, 1)));
          }
        },
      }).then((compressed) => {
        // It compressed (0, 0) only: the decode step compressed the other three rows of its layers first.
        expect(compressed).toBe(1);
        outputs[i]!.push(...decodeSteps(cache, steps.slice(1)));
      });
    });
    const stopped = victim.compressAsync({ onProgress: () => tick(1) }).catch((err: unknown) => err);
    await tick(1);
    victim.dispose();
    await Promise.all(runs);
    expect(await stopped).toBeInstanceOf(DisposedError);
    await Promise.all(twins);
    caches.forEach((cache, i) => {
      expect(outputs[i], `cache ${i}`).toEqual(alone[i]!.outputs);
      expect(same(cache.save(), alone[i]!.bytes), `cache ${i}`).toBe(true);
      cache.dispose();
    });
  });
});

describe('compressAsync(): its signal', () => {
  it('an already aborted signal rejects with its own reason even when nothing is due; the cache is unchanged', async () => {
    const { cache } = await due();
    expect(await cache.compressAsync()).toBe(4);
    const before = cache.save();
    const reason = new RangeError('request cancelled');
    await expect(cache.compressAsync({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    // With pairs due too, before any is compressed.
    const { cache: fresh } = await due();
    const freshBytes = fresh.save();
    await expect(fresh.compressAsync({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    expect(same(fresh.save(), freshBytes)).toBe(true);
    expect(same(cache.save(), before)).toBe(true);
    [cache, fresh].forEach((c) => c.dispose());
  });

  it('an abort while it awaits an onProgress promise that never settles rejects at once with the reason; the promise rejecting later is not unhandled; the cache stays usable', async () => {
    const { cache, inputs } = await due();
    const stop = new AbortController();
    let fail!: (err: Error) => void;
    const call = cache.compressAsync({ signal: stop.signal, onProgress: () => new Promise<void>((_, reject) => (fail = reject)) });
    await tick(5);
    const reason = { why: 'client went away' }; // any value, as the platform allows
    stop.abort(reason);
    expect(await settled(call)).toEqual({ err: reason });
    fail(new Error('progress failed after the abort'));
    expect(cache.stats().compressions).toBe(1); // the pair before the abort stays compressed, as documented
    const bytes = cache.save();
    expect(await cache.compressAsync()).toBe(3);
    expect(toFloat32(cache.decode(0, inputs.step(2)) as never).every(Number.isFinite)).toBe(true);
    expect(bytes.length).toBeGreaterThan(0);
    cache.dispose();
  });

  it('an abort from inside an awaited onProgress stops before the next pair (locks in)', async () => {
    const { cache } = await due();
    const stop = new AbortController();
    await expect(cache.compressAsync({ signal: stop.signal, onProgress: async () => (await tick(1), stop.abort(new TypeError('enough'))) })).rejects.toThrow('enough');
    expect(cache.stats().compressions).toBe(1);
    cache.dispose();
  });

  it('compress() and compressAsync() count only the pairs they compressed: a row reset or compressed by a decode from onProgress is skipped', async () => {
    for (const call of ['compress', 'compressAsync'] as const) {
      const { cache, inputs } = await due();
      const onProgress = ({ done }: { done: number }) => {
        if (done === 1) cache.decode(1, inputs.step(2)); // compresses (1, 0) and (1, 1)
        if (done === 2) cache.reset(); // nothing left due
      };
      const n = call === 'compress' ? cache.compress({ onProgress }) : await cache.compressAsync({ onProgress });
      expect(n, call).toBe(2);
      cache.dispose();
    }
  });
});

describe('the backend registry under concurrent async use', () => {
  let backend: Backend;
  beforeAll(async () => void ({ backend } = await resolveBackend('wasm')));

  it('createCache for a backend whose start never settles rejects with the signal\'s reason (at once if already aborted); nothing is left behind', async () => {
    registerBackend('never-starts', () => new Promise<Backend>(() => {}), -10);
    const stop = new AbortController();
    const reason = new Error('deadline');
    const saved = new FullKVCache({ spec, backend: 'wasm' });
    const calls = [
      createCache({ spec, policy: 'full', backend: 'never-starts', signal: stop.signal }),
      loadCache(saved.save(), { backend: 'never-starts', signal: stop.signal }),
      ready({ backend: 'never-starts', signal: stop.signal }),
    ];
    await tick(5);
    expect(await settled(calls[0]!, 5)).toBe('pending');
    stop.abort(reason);
    for (const call of calls) expect(await settled(call)).toEqual({ err: reason });
    await expect(createCache({ spec, policy: 'full', backend: 'wasm', signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    await expect(createCache({ spec, policy: 'full', backend: 'wasm', signal: 'soon' as never })).rejects.toThrow(/^createCache: signal must be an AbortSignal/);
    saved.dispose();
  });

  it("auto does not take an abort for a backend's failure and move on to the next one", async () => {
    let hold!: (err: Error) => void;
    let first = true;
    // A best backend whose first start hangs (a slow probe), then fails fast.
    registerBackend('slow-best', () => (first ? ((first = false), new Promise<Backend>((_, reject) => (hold = reject))) : Promise.reject(new Error('no device'))), 100);
    let nextStarts = 0;
    registerBackend('next-best', () => (nextStarts++, Promise.reject(new Error('no device either'))), 99);
    const reason = new Error('cancelled');
    const stop = new AbortController();
    const call = createCache({ spec, policy: 'full', signal: stop.signal });
    await tick(5);
    stop.abort(reason);
    expect(await settled(call)).toEqual({ err: reason });
    expect(nextStarts).toBe(0); // an aborted call starts nothing more
    hold(new Error('no device'));
    const cache = await createCache({ spec, policy: 'full' });
    expect(cache.backendInfo.reason).toMatch(/slow-best unavailable \(no device\)/);
    cache.dispose();
  });

  it('loadCache aborted keeps the abort reason (not a SnapshotError) and restores nothing', async () => {
    const { cache } = await due();
    const bytes = cache.save();
    cache.dispose();
    const reason = new Error('gone');
    const err = await loadCache(bytes, { backend: 'wasm', signal: AbortSignal.abort(reason) }).catch((e: unknown) => e);
    expect(err).toBe(reason);
    expect(err).not.toBeInstanceOf(SnapshotError);
  });

  it('concurrent createCache calls share one start; a start that failed is retried, not cached (locks in)', async () => {
    let starts = 0;
    registerBackend('flaky', async () => {
      starts++;
      await tick(5);
      if (starts === 1) throw new Error('transient');
      return backend;
    }, -10);
    const first = await Promise.allSettled(Array.from({ length: 8 }, () => createCache({ spec, policy: 'full', backend: 'flaky' })));
    expect(first.map((r) => r.status)).toEqual(Array(8).fill('rejected'));
    expect(starts).toBe(1);
    const caches = await Promise.all(Array.from({ length: 8 }, () => createCache({ spec, policy: 'full', backend: 'flaky' })));
    expect(starts).toBe(2);
    caches.forEach((c) => c.dispose());
  });

  it('a synchronous constructor while an async start of the same backend is under way takes the backend (as before and after it), and both share one', async () => {
    registerBackend('wasm-late', () => createWasmBackend(), -10, { sync: createWasmBackendSync });
    const pending = createCache({ spec, policy: 'full', backend: 'wasm-late' });
    const now = new FullKVCache({ spec, backend: 'wasm-late' });
    const later = await pending;
    expect(now.backendInfo.description).toBe(later.backendInfo.description);
    expect((await resolveBackend('wasm-late')).backend).toBe((await resolveBackend('wasm-late')).backend);
    [now, later].forEach((c) => c.dispose());
  });

  it('a factory that resolves to something other than a Backend is a ConfigError naming the backend; one returning a Backend without a promise works', async () => {
    registerBackend('hollow', (async () => undefined) as never, -10);
    await expect(createCache({ spec, policy: 'full', backend: 'hollow' })).rejects.toThrow(ConfigError);
    await expect(createCache({ spec, policy: 'full', backend: 'hollow' })).rejects.toThrow(/^backend 'hollow': its factory resolved to undefined, not a Backend/);
    registerBackend('plain-return', (() => backend) as never, -10);
    const cache = await createCache({ spec, policy: 'full', backend: 'plain-return' });
    cache.dispose();
  });

  it('registering the same factory again with another priority moves it, and auto chooses again; a priority that is not a number is a ConfigError', async () => {
    const factory = async () => backend;
    registerBackend('movable', factory, -20);
    expect(listBackends().at(-1)).toBe('movable');
    const before = await ready();
    registerBackend('movable', factory, 1000);
    expect(listBackends()[0]).toBe('movable');
    expect((await ready()).reason).not.toBe(before.reason);
    expect((await ready()).name).toBe('movable');
    registerBackend('movable', factory, -20);
    expect((await ready()).name).toBe(before.name);
    expect(() => registerBackend('movable', factory, NaN)).toThrow(/^registerBackend\('movable'\): priority must be a number, got NaN/);
    expect(() => registerBackend('movable', factory, '5' as never)).toThrow(ConfigError);
  });

  it("an AbortSignal of another realm (not instanceof this realm's) is taken, and its abort is honoured", async () => {
    // What an iframe's or another global's AbortSignal is here: the same shape, another prototype chain.
    class ForeignSignal extends EventTarget {
      aborted = false;
      reason: unknown = undefined;
      throwIfAborted(): void {
        if (this.aborted) throw this.reason;
      }
    }
    const signal = new ForeignSignal();
    const foreign = {
      signal: signal as unknown as AbortSignal,
      abort: (reason: unknown) => ((signal.aborted = true), (signal.reason = reason), signal.dispatchEvent(new Event('abort'))),
    };
    expect(foreign.signal instanceof AbortSignal).toBe(false);
    const cache = await createCache({ spec, policy: 'full', backend: 'wasm', signal: foreign.signal });
    cache.dispose();
    registerBackend('never-starts-2', () => new Promise<Backend>(() => {}), -30);
    const call = createCache({ spec, policy: 'full', backend: 'never-starts-2', signal: foreign.signal });
    const reason = new Error('foreign deadline');
    foreign.abort(reason);
    expect(await settled(call)).toEqual({ err: reason });
    await expect(createCache({ spec, policy: 'full', backend: 'wasm', signal: { aborted: false } as never })).rejects.toThrow(/signal must be an AbortSignal/);
  });
});
