import { beforeEach, describe, expect, it } from 'vitest';
import {
  createCache, estimateMemory, FullKVCache, LLAMA3_8B, OutOfMemoryError, ShadowKVCache, type Cache,
} from '../../packages/shadowkv/src/backend.js';
import { KitInputs } from '../../packages/shadowkv/src/testing/inputs.js';
import { registerPoolWasm, registerSmallWasm, smallAllocations, smallRoom } from '../helpers/backends.js';

// The creation preflight: a cache whose rows, each at maxTokens, would not fit what the backend has
// left is an OutOfMemoryError before anything is allocated (not a trap or a failed allocation
// half-way through a prompt), with both sides in bytes and what would fit.
const GiB = 2 ** 30;
const MiB = 2 ** 20;
const spec = { layers: 2, queryHeads: 8, kvHeads: 2, headDim: 32, rope: { theta: 10000 } };
const options = { budget: 64, rank: 16, chunkSize: 8, localTokens: 16, maxRecentTokens: 64, denseThreshold: 256 };

/** The error a call throws (or undefined). */
async function thrown(call: () => unknown): Promise<unknown> {
  try {
    const made = (await call()) as Cache | undefined;
    made?.dispose();
    return undefined;
  } catch (err) {
    return err;
  }
}

describe('on wasm: one 4 GB heap for both tiers', () => {
  it('Llama-3-8B at batch 4 x 128K is refused up front: OutOfMemoryError with the bytes on both sides and what fits', async () => {
    const err = (await thrown(() => createCache({ spec: LLAMA3_8B, backend: 'wasm', batch: 4, maxTokens: 131072 }))) as OutOfMemoryError;
    expect(err).toBeInstanceOf(OutOfMemoryError);
    expect(err.code).toBe('SKV_OUT_OF_MEMORY');
    const m = estimateMemory({ spec: LLAMA3_8B, tokens: 131072, batch: 4, maxTokens: 131072 });
    expect(err.shortfall).toEqual({ device: m.device + m.transient, transient: m.transient, host: m.host, available: expect.objectContaining({ shared: true }) });
    expect(err.shortfall!.available.device).toBeLessThanOrEqual(4 * GiB);
    expect(err.message).toMatch(/^ShadowKVCache: batch 4 x maxTokens 131072 needs [\d.]+ GiB of device memory \([\d.]+ GiB of it at a peak: one row compressing, or one row's tail growing\) and [\d.]+ GiB of host memory \([\d.]+ GiB in all\); the wasm backend \(3\.94 GiB for both tiers\) has [\d.]+ GiB free for both\. What fits: maxTokens \d+ at batch 4; or lower budget, rank or maxRecentTokens\. Nothing was allocated$/);
  });

  it('the maxTokens the message says fits is accepted, and one token more of every row is not', async () => {
    const err = (await thrown(() => createCache({ spec: LLAMA3_8B, backend: 'wasm', maxTokens: 262144 }))) as OutOfMemoryError;
    expect(err).toBeInstanceOf(OutOfMemoryError);
    const fits = Number(/What fits: maxTokens (\d+) at batch 1/.exec(err.message)?.[1]);
    expect(fits).toBeGreaterThan(16384);
    const cache = await createCache({ spec: LLAMA3_8B, backend: 'wasm', maxTokens: fits });
    expect(cache.memory().device).toBeLessThan(MiB); // nothing is sized for the capacity until tokens come
    cache.dispose();
    expect(await thrown(() => createCache({ spec: LLAMA3_8B, backend: 'wasm', maxTokens: fits + 1 }))).toBeInstanceOf(OutOfMemoryError);
  });

  it('the constructors refuse it too (full attention of 256K Llama-3-8B tokens is 32 GiB)', () => {
    const maxTokens = 262144;
    expect(() => new FullKVCache({ spec: LLAMA3_8B, backend: 'wasm', maxTokens })).toThrow(OutOfMemoryError);
    expect(() => new FullKVCache({ spec: LLAMA3_8B, backend: 'wasm', maxTokens })).toThrow(/^FullKVCache: batch 1 x maxTokens 262144 needs 33\.75 GiB of device memory \(1\.75 GiB of it at a peak: one row compressing, or one row's tail growing\) and 0\.00 GiB of host memory/);
    expect(() => new ShadowKVCache({ spec: LLAMA3_8B, backend: 'wasm', budget: 2048, maxTokens })).toThrow(OutOfMemoryError);
  });

  it('a cache left at the default maxTokens is not refused: only a declared size is checked up front', () => {
    const cache = new ShadowKVCache({ spec: LLAMA3_8B, backend: 'wasm', budget: 2048 });
    expect(cache.memory().device).toBeLessThan(MiB); // storage grows with what is put in
    cache.dispose();
  });

  it('small caches at the default capacity still fit', async () => {
    for (const policy of ['full', 'shadowkv'] as const) (await createCache({ spec, policy, backend: 'wasm', batch: 3, options: policy === 'shadowkv' ? options : undefined })).dispose();
  });
});

describe('on a device of one small pool that refuses what passes it (wasm, scaled down)', () => {
  const backend = registerPoolWasm(24 * MiB);

  it("a cache made at the size creation says fits takes a prompt of that size in pieces: a tail's growth holds its old and new buffers, and is counted", async () => {
    const err = (await thrown(() => createCache({ spec, policy: 'full', dtype: 'f32', backend, maxTokens: 1 << 20 }))) as OutOfMemoryError;
    const fits = Number(/What fits: maxTokens (\d+) at batch 1/.exec(err.message)?.[1]);
    expect(fits).toBeGreaterThan(4096);
    const cache = await createCache({ spec, policy: 'full', dtype: 'f32', backend, maxTokens: fits });
    const inputs = new KitInputs(1, spec);
    for (let l = 0; l < spec.layers; l++) {
      for (let n = 0; n < fits; n += 1024) cache.prefill(l, inputs.prompt(1, Math.min(1024, fits - n)));
    }
    expect(cache.length(0)).toBe(fits);
    cache.dispose();
  });
});

describe('on a device that reports little room (a GPU mostly in use)', () => {
  const backend = registerSmallWasm();
  beforeEach(() => {
    smallAllocations.length = 0;
  });

  it('a cache past the free device memory is refused before any allocation; one that fits is made', async () => {
    const need = estimateMemory({ spec, tokens: 100000, batch: 2, maxTokens: 100000, options });
    smallRoom.room = { device: need.device + need.transient - 1, host: 64 * GiB, source: 'a test GPU' };
    const err = (await thrown(() => createCache({ spec, backend, batch: 2, maxTokens: 100000, options }))) as OutOfMemoryError;
    expect(err).toBeInstanceOf(OutOfMemoryError);
    expect(smallAllocations).toEqual([]);
    expect(err.shortfall).toMatchObject({ device: need.device + need.transient, host: need.host, available: { shared: false } });
    expect(err.message).toMatch(/a test GPU has [\d.]+ GiB device and 64\.00 GiB host free\. What fits: maxTokens \d+ at batch 2, or batch 1 at maxTokens 100000; or lower budget, rank or maxRecentTokens\. Nothing was allocated$/);
    smallRoom.room = { ...smallRoom.room, device: need.device + need.transient };
    const cache = await createCache({ spec, backend, batch: 2, maxTokens: 100000, options });
    expect(smallAllocations.length).toBeGreaterThan(0);
    cache.dispose();
  });

  it('short of host memory only: the message says so and does not suggest the device-side options', async () => {
    smallRoom.room = { device: 64 * GiB, host: 10 * MiB, source: 'a test GPU' };
    const err = (await thrown(() => createCache({ spec, backend, maxTokens: 1 << 20, options }))) as OutOfMemoryError;
    expect(err).toBeInstanceOf(OutOfMemoryError);
    expect(err.message).toMatch(/has 64\.00 GiB device and 0\.01 GiB host free\. What fits: maxTokens \d+ at batch 1\. Nothing was allocated$/);
    expect(smallAllocations).toEqual([]);
  });

  it('nothing fits at all: says so', async () => {
    smallRoom.room = { device: 0, host: 0, source: 'a full test GPU' };
    const err = (await thrown(() => new FullKVCache({ spec, backend, maxTokens: 4096 }))) as OutOfMemoryError;
    expect(err.message).toMatch(/a full test GPU has 0\.00 GiB device and 0\.00 GiB host free\. Not one token of one row fits\. Nothing was allocated$/);
  });

  it('ShadowKV fits device memory where full attention does not (each policy sizes itself)', async () => {
    const llama = { ...LLAMA3_8B, layers: 8 };
    const full = estimateMemory({ spec: llama, policy: 'full', tokens: 65536, maxTokens: 65536 });
    const shadow = estimateMemory({ spec: llama, tokens: 65536, maxTokens: 65536 });
    expect(shadow.device + shadow.transient).toBeLessThan(0.6 * full.device); // a 64K prompt call with queries holds ~0.5 GiB of f32 queries and outputs
    smallRoom.room = { device: shadow.device + shadow.transient, host: shadow.host, source: 'a test GPU' };
    expect(await thrown(() => createCache({ spec: llama, backend, policy: 'full', maxTokens: 65536 }))).toBeInstanceOf(OutOfMemoryError);
    expect(await thrown(() => createCache({ spec: llama, backend, maxTokens: 65536 }))).toBeUndefined();
  });
});
