// Objects used outside the interleaving the code expects: snapshot bytes reused while loadCache
// awaits, an onProgress that returns a promise, a device tensor copied to another thread. Each
// test covers the class its case is one example of; each failed before the fix it names.
import { MessageChannel } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import {
  ConfigError, createCache, definePolicyOptions, DeviceMismatchError, FullKVCache, loadCache, PolicyCache, registerPolicy, toFloat32, type CacheConfig, type DeviceTensor, type Runtime,
} from '../../packages/shadowkv/src/backend.js';
import { KitInputs } from '../../packages/shadowkv/src/testing/inputs.js';

const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 };
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

/** A ShadowKV cache with 2 rows of 100 tokens at both layers, none compressed yet (4 pairs due). */
async function due() {
  const cache = await createCache({ spec, batch: 2, policy: 'shadowkv', dtype: 'f32', backend: 'wasm', options });
  const inputs = new KitInputs(5, spec);
  for (let l = 0; l < 2; l++) cache.prefill(l, inputs.prompt(2, 100));
  return { cache, inputs };
}

/** Promise rejections nobody handled while `body` ran (and a few ticks after). */
async function unhandledDuring(body: () => Promise<unknown>): Promise<unknown[]> {
  const seen: unknown[] = [];
  const listener = (reason: unknown) => seen.push(reason);
  process.on('unhandledRejection', listener);
  try {
    await body();
    await new Promise((resolve) => setTimeout(resolve, 20));
  } finally {
    process.off('unhandledRejection', listener);
  }
  return seen;
}

describe('loadCache reads its bytes when called, not after its first await', () => {
  it('a buffer reused (or still being written) once the call returned restores the snapshot it held at the call', async () => {
    const inputs = new KitInputs(1, spec);
    const [a, b] = [await createCache({ spec, policy: 'full', dtype: 'f32', backend: 'wasm' }), await createCache({ spec, policy: 'full', dtype: 'f32', backend: 'wasm' })];
    for (let l = 0; l < 2; l++) [a, b].forEach((c) => c.prefill(l, inputs.prompt(1, 7)));
    const [first, second] = [a.save(), b.save()];
    expect(first.length).toBe(second.length); // the second overwrites the first in place
    const buffer = first.slice();
    const loading = loadCache(buffer, { backend: 'wasm' });
    buffer.set(second);
    const restored = await loading;
    expect(same(restored.save(), first)).toBe(true);
    // A buffer being written while loadCache runs is refused or read whole at the call; bad bytes keep their SnapshotError.
    const garbage = first.slice();
    garbage.fill(7, 0, 16);
    const refused = loadCache(garbage, { backend: 'wasm' });
    garbage.set(first);
    await expect(refused).rejects.toThrow(/not a shadowkv snapshot/);
    [a, b, restored].forEach((c) => c.dispose());
  });
});

describe('an onProgress that returns a promise', () => {
  it('compress(): an async onProgress is a ConfigError before any pair is compressed; the cache is left as it was', async () => {
    const { cache } = await due();
    const before = cache.save();
    const seen = await unhandledDuring(async () => {
      expect(() => cache.compress({ onProgress: async () => { throw new Error('progress failed'); } })).toThrow(ConfigError);
    });
    expect(seen).toEqual([]);
    expect(same(cache.save(), before)).toBe(true);
    expect(() => cache.compress({ onProgress: async () => {} })).toThrow(/compress\(\): onProgress is an async function.*compressAsync/);
    cache.dispose();
  });

  it('compress(): a function returning a rejected promise is a ConfigError naming the pair, not an unhandled rejection', async () => {
    const { cache } = await due();
    let calls = 0;
    let err: unknown;
    const seen = await unhandledDuring(async () => {
      try {
        cache.compress({ onProgress: () => (calls++, Promise.reject(new Error('progress failed'))) });
      } catch (e) {
        err = e;
      }
    });
    expect(seen).toEqual([]);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/compress\(\): onProgress returned a promise after pair 1 of 4 \(layer 0, sequence 0\)/);
    expect(calls).toBe(1); // stopped there: the pairs before it stay compressed, as after an onProgress that throws
    expect(cache.stats().compressions).toBe(1);
    expect(cache.compress()).toBe(3);
    cache.dispose();
  });

  it('compressAsync(): a promise onProgress returns is awaited before the next pair, and its rejection rejects the call', async () => {
    const { cache, inputs } = await due();
    const log: string[] = [];
    const done = await cache.compressAsync({
      onProgress: async ({ done }) => {
        log.push(`start ${done}`);
        await new Promise((resolve) => setTimeout(resolve, 5));
        log.push(`end ${done}`);
      },
    });
    expect(done).toBe(4);
    expect(log).toEqual(['start 1', 'end 1', 'start 2', 'end 2', 'start 3', 'end 3', 'start 4', 'end 4']);
    cache.reset();
    for (let l = 0; l < 2; l++) cache.prefill(l, inputs.prompt(2, 100));
    const seen = await unhandledDuring(async () => {
      await expect(cache.compressAsync({ onProgress: () => Promise.reject(new Error('progress failed')) })).rejects.toThrow('progress failed');
    });
    expect(seen).toEqual([]);
    expect(cache.stats().compressions).toBe(5); // 4, then the pair before the rejection
    // Its option errors name compressAsync(), not compress().
    await expect(cache.compressAsync({ onProgress: 5 as never })).rejects.toThrow(/^compressAsync\(\): onProgress must be a function/);
    await expect(cache.compressAsync({ layers: [0, 0] })).rejects.toThrow(/^compressAsync\(\): layers \[0, 0\] repeat a layer/);
    expect(toFloat32(cache.decode(0, inputs.step(2)) as never).every(Number.isFinite)).toBe(true);
    cache.dispose();
  });
});

describe('a device tensor copied to another thread', () => {
  it('a structured-clone copy (postMessage, structuredClone) or a spread is a DeviceMismatchError naming it, as an input or as out; the cache is unchanged', async () => {
    const cache = await createCache({ spec, policy: 'full', dtype: 'f32', backend: 'wasm' });
    const inputs = new KitInputs(2, spec);
    cache.prefill(0, inputs.prompt(1, 9));
    const step = inputs.step(1);
    const query = cache.allocTensor(step.query.shape, 'f32', step.query.data);
    const out = cache.allocTensor(step.query.shape, 'f32');
    const { port1, port2 } = new MessageChannel();
    const posted = await new Promise<DeviceTensor>((resolve) => {
      port2.once('message', resolve);
      port1.postMessage(query);
    });
    port1.close();
    const before = cache.save();
    for (const copy of [posted, structuredClone(query), { ...query }] as never[]) {
      expect(() => cache.decode(0, { ...step, query: copy })).toThrow(DeviceMismatchError);
      expect(() => cache.decode(0, { ...step, query: copy })).toThrow(/decode\(layer 0\): query is a copy of a DeviceTensor .*query\.read\(\)/);
      expect(() => cache.decode(0, step, { out: structuredClone(out) as never })).toThrow(/decode\(layer 0\): out is a copy of a DeviceTensor/);
      expect(() => cache.prefill(1, { keys: structuredClone(query) as never, values: step.value })).toThrow(/prefill\(layer 1\): keys is a copy of a DeviceTensor/);
    }
    expect(same(cache.save(), before)).toBe(true);
    // The tensor itself still works on its own cache.
    expect(Array.from((cache.decode(0, { ...step, query }) as DeviceTensor).read()).every(Number.isFinite)).toBe(true);
    cache.dispose();
  });
});

describe("a policy's hooks are synchronous", () => {
  it('a plugin with an async hook is a ConfigError naming it at construction, before a runtime starts (a saveState promise saved nothing, an afterPrefill rejection went unhandled)', async () => {
    const OPTS = definePolicyOptions<Record<string, never>>({});
    class AsyncHooks extends PolicyCache<Record<string, never>> {
      readonly name = 'async-hooks';
      constructor(config: CacheConfig & Record<string, never>, runtime?: Runtime) {
        super(config, OPTS, runtime);
      }
      protected override async afterPrefill(): Promise<void> {}
      protected override saveState(): Record<string, unknown> {
        return {};
      }
    }
    class AsyncSave extends FullKVCache {
      // @ts-expect-error TypeScript refuses it too, but a policy written in JavaScript is not checked
      protected override async saveState(): Promise<Record<string, unknown>> {
        return {};
      }
    }
    expect(() => new AsyncHooks({ spec, backend: 'wasm' } as never)).toThrow(/^AsyncHooks: afterPrefill is an async function; .*make it synchronous/);
    expect(() => new AsyncSave({ spec, backend: 'wasm' })).toThrow(ConfigError);
    registerPolicy('async-hooks', (config, runtime) => new AsyncHooks(config as never, runtime));
    await expect(createCache({ spec, policy: 'async-hooks', backend: 'wasm' })).rejects.toThrow(/afterPrefill is an async function/);
  });

  it('a plain function hook that returns a promise is a ConfigError naming it when it returns, and its rejection is not left unhandled', async () => {
    let pending = false;
    class PromisingHooks extends FullKVCache {
      protected override afterStep(): Promise<void> | void {
        if (pending) return Promise.reject(new Error('afterStep failed later'));
      }
      protected override saveState(): Record<string, unknown> {
        return (pending ? Promise.resolve({}) : {}) as Record<string, unknown>;
      }
    }
    const cache = new PromisingHooks({ spec, dtype: 'f32', backend: 'wasm' });
    const inputs = new KitInputs(5, spec);
    cache.prefill(0, inputs.prompt(1, 20));
    cache.decode(0, inputs.step(1)); // synchronous hooks: as any policy's
    expect(cache.save().length).toBeGreaterThan(0);
    pending = true;
    const unhandled = await unhandledDuring(async () => {
      expect(() => cache.decode(0, inputs.step(1))).toThrow(/^PromisingHooks: afterStep returned a promise; .*do its work synchronously/);
      expect(() => cache.save()).toThrow(/^PromisingHooks: saveState returned a promise/);
    });
    expect(unhandled).toEqual([]);
    pending = false;
    cache.decode(0, inputs.step(1)); // the cache goes on
    cache.dispose();
  });
});
