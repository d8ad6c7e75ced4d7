// The JavaScript share of a CUDA decode step's host time, on any machine: decode() through
// CudaDevice over a stub addon (every native call returns at once, no GPU), host-array inputs and a
// device-tensor output, as the GPU benchmark's queued steps. The GPU machine's host runs the same
// code ~3-5x slower (bench/gpu/profile.ts's host line measures it there, with the native calls).
// One Llama-3-8B layer's heads; --policy shadowkv compresses a 4K-token prompt first (the stub's
// ops write nothing, so its steps select nothing: the JavaScript is the sparse step's all the same).
//   node node_modules/tsx/dist/cli.mjs bench/gpu/host.ts [--batches 1,4] [--steps 30000] [--policy full|shadowkv]
import { createCache } from '../../packages/shadowkv/src/backend.js';
import { cli } from '../../examples/cli.js';
import { registerStubCuda } from './stubCuda.js';

const f = cli('bench/gpu/host', "the JavaScript share of a CUDA decode step's host time, over a stub addon", {
  batches: { kind: 'ints', default: [1, 4], min: 1, max: 4096, doc: 'rows' },
  steps: { kind: 'int', default: 30000, min: 1, max: 1e8, doc: 'timed decode() calls' },
  policy: { kind: 'choice', default: 'full', of: ['full', 'shadowkv'], doc: 'the cache' },
});
const policy = f.policy as 'full' | 'shadowkv';
const promptTokens = policy === 'full' ? 64 : 4096;

const backend = registerStubCuda();

const spec = { layers: 1, queryHeads: 32, kvHeads: 8, headDim: 128, rope: { theta: 500000 } };
const steps = f.steps;
for (const batch of f.batches) {
  const cache = await createCache({ spec, batch, dtype: 'bf16', backend, policy, maxTokens: 2 * steps + 2 * promptTokens });
  const keys = { data: new Uint16Array(batch * 8 * promptTokens * 128), shape: [batch, 8, promptTokens, 128], dtype: 'bf16' as const };
  cache.prefill(0, { keys, values: keys });
  const query = { data: new Float32Array(batch * 32 * 128).fill(0.1), shape: [batch, 32, 1, 128], dtype: 'f32' as const };
  const key = { data: new Float32Array(batch * 8 * 128).fill(0.1), shape: [batch, 8, 1, 128], dtype: 'f32' as const };
  const out = cache.allocTensor([batch, 32, 1, 128], 'f32');
  const run = (n: number) => {
    const t = performance.now();
    for (let i = 0; i < n; i++) cache.decode(0, { query, key, value: key }, { out });
    return ((performance.now() - t) * 1000) / n;
  };
  run(Math.min(steps, 2000)); // warm: the JIT, the tail's growth
  console.log(`batch ${batch}: ${run(steps).toFixed(1)} us of JavaScript per decode() (${policy} policy${policy === 'shadowkv' ? `, ${cache.stats().compressions} of ${batch} rows compressed` : ''}, stub addon, ${steps} steps)`);
  cache.dispose();
}
