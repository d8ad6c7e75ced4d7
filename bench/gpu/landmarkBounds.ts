// The landmark bound op (kernels/landmark_bounds.cu) over one store of Llama-3-8B geometry (8 kv
// heads, d 128, bf16, a landmark every 8 tokens): GPU time per call by CUDA events, the median of
// --runs after 5 untimed. A compression runs it once per layer and row, a restore once per store,
// so its time adds to prefill compression's.
//   SHADOWKV_CUDA_SYNC=0 node node_modules/tsx/dist/cli.mjs bench/gpu/landmarkBounds.ts [--context 131072] [--runs 50]
import { at, fromNumbers, HEAD_FIELDS, HEAD_WORDS, resolveBackend } from '../../packages/shadowkv/src/backend.js';
import { randn, rng } from '../../examples/workloads/random.js';
import { cli } from '../../examples/cli.js';
import type { BenchDevice } from './device.js';

const f = cli('bench/gpu/landmarkBounds', 'GPU time of the landmark bound op over one store', {
  context: { kind: 'int', default: 131072, min: 8, max: 1 << 22, doc: 'tokens of the store' },
  runs: { kind: 'int', default: 50, min: 1, max: 100000, doc: 'timed calls' },
});
const [heads, d] = [8, 128];
const chunks = f.context / 8;
const device = (await resolveBackend('cuda')).backend.createDevice() as BenchDevice;
if (!device.gpuTime || !device.landmarkBounds) throw new Error('bench/gpu/landmarkBounds: needs the cuda backend');
const landmarks = device.alloc(heads * chunks * d, 'bf16', 'bench');
device.write(at(landmarks), fromNumbers(randn(heads * chunks * d, rng(1)), 'bf16')); // the scan's time does not depend on the values
const table = device.alloc(heads * HEAD_WORDS, 'i32', 'bench');
const counts = new Int32Array(heads * HEAD_WORDS);
for (let h = 0; h < heads; h++) counts[h * HEAD_FIELDS] = chunks;
device.write(at(table), counts);
const ms: number[] = [];
for (let i = 0; i < f.runs + 5; i++) {
  const t = device.gpuTime(() => device.landmarkBounds!(at(landmarks), heads, chunks, d, at(table)));
  if (i >= 5) ms.push(t);
}
const median = ms.sort((a, b) => a - b)[ms.length >> 1]!;
const bytes = heads * chunks * d * 2;
console.log(`landmarkBounds: ${heads} heads x ${chunks} landmarks x ${d} (bf16, ${(bytes / 2 ** 20).toFixed(0)} MiB): ${(median * 1000).toFixed(1)} us GPU (median of ${f.runs}), ${(bytes / median / 1e6).toFixed(0)} GB/s`);
device.dispose();
