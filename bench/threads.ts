// The model loop's projections on several threads (LlamaModel's `threads`, ThreadedMatmul), side by
// side in one run: a 4K passkey prompt's prefill (exact attention, which stays on one thread) and one
// 512-token chunk through every layer's projections, per thread count, two rounds.
//   npx tsx bench/threads.ts [--model models/skv-small] [--tokens 4096]
import { availableParallelism } from 'node:os';
import { loadCheckpoint, LlamaModel } from '../packages/llama/src/index.js';
import { createCache } from '../packages/shadowkv/src/index.js';
import { encodeSample } from './eval/evaluate.js';
import { drawSample } from './eval/tasks.js';
import { cli } from '../examples/cli.js';

const a = cli('bench/threads', "the model loop's projections on several threads, side by side", {
  model: { kind: 'string', default: 'models/skv-small', doc: 'a model folder' },
  tokens: { kind: 'int', default: 4096, min: 128, max: 1 << 20, doc: 'prompt tokens' },
});
const checkpoint = await loadCheckpoint(a.model);
const { ids } = encodeSample(drawSample('passkey', a.tokens, 0));
const counts = [...new Set([1, 2, 4, 8, availableParallelism()])].filter((t) => t <= availableParallelism());
console.log(`${a.model}, ${availableParallelism()} cores; ${ids.length}-token prompt`);
const chunk = 512;
const models = new Map<number, LlamaModel>();
// Every layer's projection weights, prepared once more per model for the timed products (the model's own are private).
const projections = new Map<number, { weight: ReturnType<LlamaModel['matmul']['prepare']>; x: Float32Array; out: Float32Array }[]>();
for (const t of counts) {
  const m = await LlamaModel.create(checkpoint, { backend: 'wasm', threads: t });
  models.set(t, m);
  projections.set(t, checkpoint.weights.layers.flatMap((layer) => Object.values(layer.proj).map((lin) => {
    const [rows, cols] = lin.weight.shape as [number, number];
    return { weight: m.matmul.prepare(lin.weight), x: new Float32Array(chunk * cols).fill(0.01), out: new Float32Array(chunk * rows) };
  })));
}
for (let round = 0; round < 2; round++) {
  for (const t of counts) {
    const m = models.get(t)!;
    // NOTE: the cache on wasm wherever this runs ('auto' would take CUDA on a GPU machine).
    using cache = await createCache({ spec: m.spec, policy: 'full', backend: 'wasm', maxTokens: ids.length });
    let t0 = performance.now();
    m.prefill(ids, cache);
    const prefill = (performance.now() - t0) / 1000;
    t0 = performance.now();
    for (const p of projections.get(t)!) m.matmul.linear(p.x, chunk, p.weight, p.out);
    const matmuls = (performance.now() - t0) / 1000;
    console.log(`threads ${t}: prefill ${prefill.toFixed(2)} s (${(ids.length / prefill).toFixed(0)} tokens/s); a ${chunk}-token chunk's projections ${(matmuls * 1000).toFixed(0)} ms`);
  }
}
for (const m of models.values()) m.dispose();
