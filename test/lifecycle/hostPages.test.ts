import { expect, it } from 'vitest';
import { createCache, estimateMemory, type Cache } from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { HostPages } from '../../packages/shadowkv/src/policies/shadowkv/HostPages.js';
import { hostAllocations, registerPinningWasm, registerRecorded } from '../helpers/backends.js';

// A cache with a declared maxTokens on a device whose host tier is slow to allocate (CUDA pins it)
// takes every row's host pages at creation, so that compressing a row only copies. The wasm device
// here says it pins, so the reserve runs on the CPU: same outputs, no host allocation after creation,
// pages reused across a reset, everything freed at dispose.
const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48, hostPageChunks: 4 };
const maxTokens = 203; // not a whole number of pages: the last one is partly used
/** Prompt, compression at the first step, steps past a compaction (inputs drawn afresh per run); the outputs of every step. */
function run(cache: Cache, steps = 30): Float32Array[] {
  const work = new NeedleWorkload(spec, { tokens: 150, seed: 7 });
  for (let l = 0; l < spec.layers; l++) cache.prefill(l, work.prompt(l, 2));
  const outs: Float32Array[] = [];
  for (let t = 0; t < steps; t++) for (let l = 0; l < spec.layers; l++) outs.push(Float32Array.from(cache.decode(l, work.step(l, 2)).data as Float32Array));
  return outs;
}

it('pages reserved at creation: the estimate\'s host bytes pinned up front, none allocated by compression, outputs bit-identical', async () => {
  const pinning = registerPinningWasm();
  const { name, devices } = registerRecorded(pinning);
  const reserved = await createCache({ spec, backend: name, dtype: 'bf16', batch: 2, maxTokens, options });
  const plain = await createCache({ spec, backend: 'wasm', dtype: 'bf16', batch: 2, maxTokens, options });
  const entry = devices.at(-1)!;
  const atCreation = reserved.memory().host;
  expect(atCreation).toBe(estimateMemory({ spec, tokens: maxTokens, maxTokens, batch: 2, dtype: 'bf16', options }).host);
  expect(plain.memory().host).toBe(0); // a device that does not pin allocates pages on demand
  hostAllocations.length = 0;
  const got = run(reserved);
  const want = run(plain);
  expect(reserved.stats().compactions).toBeGreaterThan(0);
  expect(hostAllocations).toEqual([]);
  expect(reserved.memory().host).toBe(atCreation);
  got.forEach((out, i) => expect(Array.from(out)).toEqual(Array.from(want[i]!)));
  // A reset gives the rows' pages back and its next compression takes them again.
  reserved.reset();
  run(reserved, 2);
  expect(hostAllocations).toEqual([]);
  reserved.dispose();
  plain.dispose();
  expect(entry.atDispose).toMatchObject({ host: 0 });
  expect(entry.device.memory()).toMatchObject({ device: 0, host: 0 });
});

it('past its reserve a HostPages allocates pages one by one, and gives those back to the device', async () => {
  const { name, devices } = registerRecorded(registerPinningWasm());
  const cache = await createCache({ spec, backend: name, dtype: 'bf16', options }); // no maxTokens: nothing reserved
  const device = devices.at(-1)!.device;
  const pages = new HostPages(device, 256, 'bf16');
  hostAllocations.length = 0;
  pages.reserve(3);
  const taken = Array.from({ length: 5 }, () => pages.take());
  expect(hostAllocations).toEqual(['values', 'values', 'values']); // one slab, then two pages of their own
  expect(new Set(taken.map((p) => p.ptr)).size).toBe(5);
  expect(taken.slice(0, 3).map((p) => p.ptr - taken[0]!.ptr)).toEqual([0, 512, 1024]); // carved in address order
  taken.forEach((p) => pages.give(p));
  expect(pages.available).toBe(3);
  expect(device.memory().host).toBe(3 * 512);
  pages.dispose();
  expect(device.memory().host).toBe(0);
  cache.dispose();
});
