import { expect, it } from 'vitest';
import { createCache, estimateMemory, LLAMA3_8B } from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';

it.each([
  ['GQA, bf16, hot-value cache', { layers: 2, queryHeads: 16, kvHeads: 4, headDim: 64, rope: { theta: 10000 } }, 'bf16', 3001, { budget: 256, rank: 48, denseThreshold: 1024, hotChunks: 100 }],
  ['MHA, f32, sink tokens', { layers: 1, queryHeads: 4, kvHeads: 4, headDim: 32, rope: { theta: 10000 } }, 'f32', 2500, { budget: 128, rank: 40, denseThreshold: 512, sinkTokens: 16 }],
] as const)('estimateMemory predicts memory() after prefill and generation (%s)', async (_, spec, dtype, tokens, options) => {
  const batch = 2;
  const estimate = estimateMemory({ spec, tokens, batch, dtype, options });
  const cache = await createCache({ spec, batch, dtype, options });
  const work = new NeedleWorkload(spec, { tokens, seed: 3 });
  for (let l = 0; l < spec.layers; l++) cache.prefill(l, work.prompt(l, batch));
  for (let t = 0; t < 40; t++) for (let l = 0; l < spec.layers; l++) cache.decode(l, work.step(l, batch));
  const actual = cache.memory();
  // Host and the compressed components are exact; the tail is estimated at its largest.
  expect(actual.host).toBe(estimate.host);
  for (const name of ['lowRankU', 'basis', 'landmarks', 'outliers', 'selected', 'hotValues', 'tables']) expect(actual.components[name] ?? 0, name).toBe(estimate.components[name]);
  expect(estimate.components.hotValues).toBe('hotChunks' in options ? spec.layers * batch * spec.kvHeads * options.hotChunks * 8 * spec.headDim * 2 : 0);
  expect(actual.components.exactTail!).toBeLessThanOrEqual(estimate.components.exactTail!);
  expect(actual.dense).toBeCloseTo(estimate.dense * (tokens + 40) / tokens, -3);
  cache.dispose();
});

it('says when a cache cannot fit the 4 GB wasm heap, and full attention at 128K x 8 rows does not', () => {
  const shadow = estimateMemory({ spec: LLAMA3_8B, tokens: 131072, batch: 1, dtype: 'bf16' });
  const full = estimateMemory({ spec: LLAMA3_8B, tokens: 131072, batch: 8, dtype: 'bf16', policy: 'full' });
  expect(full.device).toBe(full.dense);
  expect(full.dense).toBe(8 * 32 * 2 * 8 * 131072 * 128 * 2); // 128 GiB
  expect(full.fitsWasmHeap).toBe(false);
  // Values of every compressed token in whole host pages (256 chunks), with room for one compaction (133 chunks).
  const pages = Math.ceil((131040 / 8 + 133) / 256);
  expect(shadow.host).toBe(32 * 8 * pages * 256 * 8 * 128 * 2);
  expect(shadow.device).toBeLessThan(shadow.dense / 5);
});

it('an allocation the wasm heap cannot hold is an OutOfMemoryError naming what it was for', async () => {
  const { resolveBackend, OutOfMemoryError } = await import('../../packages/shadowkv/src/backend.js');
  const device = (await resolveBackend('wasm')).backend.createDevice();
  expect(() => device.alloc(2 ** 31, 'f32', 'landmarks')).toThrow(OutOfMemoryError);
  expect(() => device.alloc(2 ** 31, 'f32', 'landmarks')).toThrow(/could not allocate 8589934592 bytes for landmarks/);
  const small = device.alloc(16, 'f32', 'landmarks'); // the runtime is still usable
  expect(device.memory().components.landmarks).toBe(64);
  device.free(small);
});
