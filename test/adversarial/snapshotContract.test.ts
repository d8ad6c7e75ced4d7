// The snapshot API's contract beyond the bytes (snapshot.fuzz.test.ts has those): who gets which
// error, what a snapshot records, and what a restored cache keeps. Cases from trying it as an
// adversary would (bench/NOTES.md v47): each test covers the class its case was one example of.
import { describe, expect, it } from 'vitest';
import {
  ConfigError, createCache, definePolicyOptions, loadCache, NonFiniteError, PolicyCache, registerPolicy, SnapshotError, toFloat32, type CacheConfig, type Runtime,
} from '../../packages/shadowkv/src/backend.js';
import { encodeSnapshot } from '../../packages/shadowkv/src/snapshot.js';
import { KitInputs } from '../../packages/shadowkv/src/testing/inputs.js';
import { forEachEnv } from '../envs.js';

const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };

describe('loadCache: the envelope', () => {
  it('bytes after the snapshot, or a payload length that ends early, are a SnapshotError at once, whatever the size', async () => {
    const cache = await createCache({ spec, policy: 'full', dtype: 'f32', backend: 'wasm' });
    const inputs = new KitInputs(1, spec);
    for (let i = 0; i < 8; i++) cache.prefill(0, inputs.prompt(1, 4096));
    const bytes = cache.save();
    cache.dispose();
    expect(bytes.length).toBeGreaterThan(8 * 2 ** 20);
    // NOTE: msgpackr's own trailing-bytes error stringified the whole decoded envelope for its message
    // (65 s and 3.7 GiB for 48 MiB); the test's timeout is the bound.
    const appended = new Uint8Array(bytes.length + 1);
    appended.set(bytes);
    await expect(loadCache(appended, { backend: 'wasm' })).rejects.toThrow(/ends at byte \d+ of \d+: the snapshot was altered or has bytes appended/);
    const header = Buffer.from(bytes.subarray(0, 200)).indexOf('payload') + 'payload'.length;
    const shorter = bytes.slice();
    shorter[header + 4]! ^= shorter[header + 4]! & -shorter[header + 4]! || 1; // the payload's length, one bit lower
    await expect(loadCache(shorter, { backend: 'wasm' })).rejects.toThrow(SnapshotError);
  }, 20_000);

  it('fields of the wrong type are named as stored ("2" is not 2)', async () => {
    const version = encodeSnapshot({}).slice();
    const at = Buffer.from(version).indexOf('version') + 'version'.length;
    expect(version[at]).toBe(2); // a positive fixint
    const asString = new Uint8Array([...version.subarray(0, at), 0xa1, 0x32, ...version.subarray(at + 1)]);
    await expect(loadCache(asString, { backend: 'wasm' })).rejects.toThrow(/version "2" is not supported/);
  });
});

describe('loadCache: whose error', () => {
  it("the caller's options are checked as createCache checks them: ConfigError, NoDeviceError, never SnapshotError", async () => {
    const cache = await createCache({ spec, policy: 'full', backend: 'wasm' });
    const bytes = cache.save();
    cache.dispose();
    for (const bad of [null, 5, 'wasm', { backnd: 'wasm' }, { backend: 'wasm', batch: 2 }, { backend: 'tpu' }]) {
      const err = await loadCache(bytes, bad as never).then(() => undefined, (e: unknown) => e);
      expect(err, JSON.stringify(bad)).toBeInstanceOf(ConfigError);
    }
  });

  it('a cache left at the default maxTokens restores though batch x 256K tokens would not fit the device: only a declared size is checked', async () => {
    // 64 rows x 256K f32 tokens are 8 GiB, twice the wasm backend's room; the cache holds a few tokens.
    const cache = await createCache({ spec: { ...spec, layers: 2 }, policy: 'full', batch: 64, dtype: 'f32', backend: 'wasm' });
    const inputs = new KitInputs(2, spec);
    for (let l = 0; l < 2; l++) cache.prefill(l, inputs.prompt(64, 3));
    const restored = await loadCache(cache.save(), { backend: 'wasm' });
    expect(restored.length(63)).toBe(3);
    // A declared size too large is refused at creation, and so would be at loadCache.
    await expect(createCache({ spec: { ...spec, layers: 2 }, policy: 'full', batch: 64, dtype: 'f32', backend: 'wasm', maxTokens: 262144 })).rejects.toThrow(/OutOfMemory|needs/);
    [cache, restored].forEach((c) => c.dispose());
  });

  it('the method that refills a cache from a snapshot is not part of a cache', async () => {
    const cache = await createCache({ spec, policy: 'full', backend: 'wasm' });
    expect((cache as unknown as Record<string, unknown>).restore).toBeUndefined();
    cache.dispose();
  });
});

describe('save(): a snapshot loadCache would refuse is refused when saved', () => {
  it("a plugin's counter that is not a non-negative integer is a ConfigError, and the cache goes on", async () => {
    const OPTS = definePolicyOptions<{ k?: number }>({ k: { default: 1, min: 0, max: 10 } });
    class Averaging extends PolicyCache<{ k?: number }> {
      readonly name = 'averaging';
      mean = 0.5;
      constructor(c: CacheConfig & { k?: number }, r?: Runtime) {
        super(c, OPTS, r);
      }
      protected override saveCounters() {
        return { mean: this.mean };
      }
    }
    registerPolicy('averaging', (c, r) => new Averaging(c as never, r));
    const cache = await createCache({ spec, policy: 'averaging', backend: 'wasm' } as never) as unknown as Averaging;
    cache.prefill(0, new KitInputs(3, spec).prompt(1, 10));
    expect(() => cache.save()).toThrow(/counter 'mean' is 0.5; saveCounters\(\) must give non-negative integers/);
    cache.mean = 2;
    const restored = await loadCache(cache.save(), { backend: 'wasm' });
    expect(restored.length(0)).toBe(10);
    [cache, restored].forEach((c) => c.dispose());
  });
});

describe('a restored cache keeps what the original reports', () => {
  it("quest's selection() is the original's after loadCache", async () => {
    const cache = await createCache({ spec, policy: 'quest', dtype: 'f32', backend: 'wasm', options: { chunkSize: 8, budget: 32 } });
    const inputs = new KitInputs(4, spec);
    cache.prefill(0, inputs.prompt(1, 200));
    cache.decode(0, inputs.step(1));
    const picked = [0, 1].map((h) => cache.selection(0, 0, h));
    expect(picked[0]!.length).toBe(4);
    const restored = (await loadCache(cache.save(), { backend: 'wasm' })) as typeof cache;
    expect([0, 1].map((h) => restored.selection(0, 0, h))).toEqual(picked);
    [cache, restored].forEach((c) => c.dispose());
  });
});

forEachEnv('shadowkv: keys whose low-rank basis passes the storage dtype', (env) => {
  it('compression is a NonFiniteError naming the dtype, the cache is left as it was, and a reset row goes on', async () => {
    const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, sinkTokens: 4, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 };
    const cache = await createCache({ spec, policy: 'shadowkv', batch: 1, dtype: env.dtype, backend: env.backend, options });
    const inputs = new KitInputs(5, spec);
    const prompt = inputs.prompt(1, 200);
    // Each key within f16's per-key limit (65504 / sqrt 2, checked at prefill), their singular values not.
    const k = prompt.keys.data as Float32Array;
    for (let i = 0; i < k.length; i++) k[i] = Math.max(-46000, Math.min(46000, k[i]! * 10000));
    cache.prefill(0, prompt);
    // NOTE: scratch is the device's workspace, kept for the next call, not the cache's state.
    const held = () => ({ length: cache.length(0), stats: cache.stats(), memory: { ...cache.memory().components, scratch: 0 } });
    const before = held();
    expect(() => cache.decode(0, inputs.step(1))).toThrow(NonFiniteError);
    expect(() => cache.decode(0, inputs.step(1))).toThrow(/past what 'f16' storage holds \(65504\)/);
    expect(held()).toEqual(before);
    cache.reset(0);
    cache.prefill(0, inputs.prompt(1, 200));
    expect(toFloat32(cache.decode(0, inputs.step(1)) as never).every(Number.isFinite)).toBe(true);
    expect(cache.stats().compressions).toBe(1);
    cache.dispose();
  });
}, (e) => e.dtype === 'f16');
