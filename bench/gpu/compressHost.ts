// The JavaScript share of compress() on the CUDA backend, on any machine: CudaDevice over a stub
// addon (every native call returns at once, no GPU), one Llama-3-8B layer's heads, rows of --tokens
// prefilled and compressed one by one; the JavaScript between compress()'s stages (compress.ts's
// stage marks) as medians over the rows after the first 10. On the GPU machine this time is spent
// while the device waits between the stages' kernels (the host there runs JavaScript ~3x slower).
//   node node_modules/tsx/dist/cli.mjs bench/gpu/compressHost.ts [--tokens 65536] [--rows 60]
import { createCache, type ShadowKVCache } from '../../packages/shadowkv/src/backend.js';
import { compressStages } from '../../packages/shadowkv/src/policies/shadowkv/compress.js';
import { cli } from '../../examples/cli.js';
import { registerStubCuda } from './stubCuda.js';

const f = cli('bench/gpu/compressHost', 'the JavaScript share of compress() on the CUDA backend, over a stub addon', {
  tokens: { kind: 'int', default: 65536, min: 64, max: 1 << 20, doc: 'tokens per row' },
  rows: { kind: 'int', default: 60, min: 11, max: 4096, doc: 'rows compressed one by one (the medians skip the first 10)' },
});
const [T, rows] = [f.tokens, f.rows];
const backend = registerStubCuda();

const spec = { layers: 1, queryHeads: 32, kvHeads: 8, headDim: 128, rope: { theta: 500000 } };
const cache = (await createCache({ spec, batch: rows, dtype: 'bf16', backend, policy: 'shadowkv', maxTokens: T + 1024 })) as ShadowKVCache;
const keys = { data: new Uint16Array(8 * T * 128), shape: [1, 8, T, 128], dtype: 'bf16' as const };
const stages = new Map<string, number[]>();
const whole: number[] = [];
let last = 0;
compressStages.end = (stage) => {
  const now = performance.now();
  (stages.get(stage) ?? stages.set(stage, []).get(stage)!).push(now - last);
  last = now;
};
for (let b = 0; b < rows; b++) {
  cache.prefill(0, { keys, values: keys, sequences: [b] });
  const t0 = (last = performance.now());
  cache.compress({ sequences: [b] });
  whole.push(performance.now() - t0);
}
cache.dispose();
const median = (xs: number[]) => {
  const w = xs.slice(10).sort((a, b) => a - b);
  return w[Math.floor(w.length / 2)]! * 1000;
};
console.log(`compress() JavaScript per ${T}-token row (stub addon), median over rows 10-${rows - 1}: ${median(whole).toFixed(0)} us`);
console.log(`  by stage (us): ${[...stages].map(([s, xs]) => `${s} ${median(xs).toFixed(0)}`).join(', ')}`);
