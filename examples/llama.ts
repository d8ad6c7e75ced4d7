// A Llama model loop end to end on a random checkpoint it writes itself (no download): the HF
// files (config.json + safetensors), loaded back, a prompt through `full` and through `shadowkv`
// with options fitted to the model, tokens streamed, tokens per second and memory per tier.
// The model knows nothing, so the text is noise: this shows the plumbing and the speed.
// Run: npx tsx examples/llama.ts [--tokens 4096] [--new 32] [--layers 8] [--hidden 512] [--heads 8]
//        [--kv-heads 2] [--head-dim 64] [--intermediate 1536] [--dtype bf16] [--chunk 512]
//        [--backend auto | wasm | cuda] [--matmul wasm | device | js (default: device on cuda, else wasm)]
// --backend cuda puts the caches and the projections (gemm) on the GPU. The checkpoint goes to a
// temporary folder once the flags and the backend are checked, and is removed as soon as it is
// loaded (and on every way out before that: an error, Ctrl-C).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { ByteTokenizer, fitCacheOptions, generate, LlamaModel, randomWeights, writeCheckpoint, type LlamaConfig } from '../packages/llama/src/index.js';
import { FullKVCache, ready, ShadowKVCache, type DType, type KVCachePolicy } from '../packages/shadowkv/src/index.js';
import { cli, refuse } from './cli.js';
import { Progress } from './progress.js';

const args = cli('examples/llama', 'a Llama model loop end to end on a random checkpoint it writes itself', {
  tokens: { kind: 'int', default: 4096, min: 64, max: 131072, doc: 'prompt tokens' },
  new: { kind: 'int', default: 32, min: 1, max: 4096, doc: 'tokens to generate' },
  layers: { kind: 'int', default: 8, min: 1, max: 128, doc: 'layers' },
  hidden: { kind: 'int', default: 512, min: 8, max: 16384, doc: 'hidden size' },
  heads: { kind: 'int', default: 8, min: 1, max: 256, doc: 'query heads' },
  'kv-heads': { kind: 'int', default: 2, min: 1, max: 256, doc: 'kv heads (divide the query heads)' },
  'head-dim': { kind: 'int', default: 64, min: 2, max: 1024, doc: 'head dim (even)' },
  intermediate: { kind: 'int', default: 1536, min: 8, max: 65536, doc: 'MLP width' },
  dtype: { kind: 'choice', default: 'bf16', of: ['bf16', 'f16', 'f32'], doc: 'weight and cache dtype' },
  matmul: { kind: 'choice', of: ['wasm', 'device', 'js'], doc: 'the projections (default: device on cuda, else wasm)' },
  backend: { kind: 'string', default: 'auto', doc: 'auto, wasm or cuda' },
  chunk: { kind: 'int', default: 512, min: 1, max: 65536, doc: 'prompt tokens per prefill call' },
});
const n = (key: 'tokens' | 'new' | 'layers' | 'hidden' | 'heads' | 'kv-heads' | 'head-dim' | 'intermediate' | 'chunk') => args[key];

// What the checkpoint's config would refuse only once written and read back (47 MB at the defaults).
if (n('heads') % n('kv-heads') !== 0) refuse('examples/llama', `--kv-heads ${n('kv-heads')} must divide --heads ${n('heads')}`);
if (n('head-dim') % 2 !== 0) refuse('examples/llama', `--head-dim ${n('head-dim')} must be even (RoPE rotates pairs)`);

// 1. A checkpoint in the Hugging Face layout (two shards, Llama-3 RoPE scaling), byte-level vocabulary.
const config: LlamaConfig = {
  vocabSize: 256, hiddenSize: n('hidden'), intermediateSize: n('intermediate'), layers: n('layers'),
  queryHeads: n('heads'), kvHeads: n('kv-heads'), headDim: n('head-dim'), rmsNormEps: 1e-5, ropeTheta: 500000,
  ropeScaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
  maxPositions: 131072, tieWordEmbeddings: false, attentionBias: false, mlpBias: false, eosTokenIds: [],
};
if (n('tokens') + n('new') > config.maxPositions) refuse('examples/llama', `--tokens ${n('tokens')} and --new ${n('new')} need ${n('tokens') + n('new')} positions, past the model's maxPositions ${config.maxPositions}`);
// The caches and the model on one backend: 'auto' resolves once, here, to the best that starts.
const backend = await ready({ backend: args.backend });
const dir = mkdtempSync(`${tmpdir()}/shadowkv-llama-`);
const removeCheckpoint = () => rmSync(dir, { recursive: true, force: true });
process.once('exit', removeCheckpoint); // process.exit() and uncaught errors (cli.ts's handler exits)
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));
let model: LlamaModel;
try {
  await writeCheckpoint(dir, config, randomWeights(config, { dtype: args.dtype as DType, seed: 1 }), { shards: 2 });
  model = await LlamaModel.load(dir, { backend: backend.name, ...(args.matmul ? { matmul: args.matmul as 'wasm' | 'device' | 'js' } : {}) });
} finally {
  removeCheckpoint(); // NOTE: every weight is in memory once loaded (loadCheckpoint reads each it keeps)
}
const params = (config.layers * (2 * config.hiddenSize * (config.queryHeads + config.kvHeads) * config.headDim + 3 * config.hiddenSize * config.intermediateSize) + 2 * config.vocabSize * config.hiddenSize) / 1e6;
console.log(`model: random, written to and loaded from ${dir} (removed) (${params.toFixed(1)}M parameters, ${args.dtype}; ${config.layers} layers, hidden ${config.hiddenSize}, ${config.queryHeads} q / ${config.kvHeads} kv heads x ${config.headDim}), matmul ${model.matmul.name}`);
console.log(`backend: ${backend.description} (${backend.reason})`);

// 2. A prompt of the requested length and cache options fitted to this model and prompt.
const tokenizer = new ByteTokenizer();
const filler = 'The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ';
const prompt = tokenizer.encode(filler.repeat(Math.ceil(n('tokens') / filler.length)).slice(0, n('tokens') - 40) + 'The pass key is 71432. Remember it. What is the pass key? The pass key is'.slice(0, 40));
const fit = fitCacheOptions(model.spec, { promptTokens: prompt.length, maxNewTokens: n('new'), hints: model.config.cacheHints });
console.log(`prompt: ${prompt.length} tokens; shadowkv options chosen for this model and prompt:`);
for (const note of fit.notes) console.log(`  ${note}`);

// 3. Each policy: prefill (chunked, with progress), then stream the generated tokens.
const caches: [string, KVCachePolicy][] = [
  ['full', new FullKVCache({ spec: model.spec, maxTokens: fit.maxTokens, backend: backend.name })],
  ['shadowkv', new ShadowKVCache({ spec: model.spec, maxTokens: fit.maxTokens, backend: backend.name, ...fit.options })],
];
for (const [name, cache] of caches) {
  const bar = new Progress(`${name} prefill`, Math.ceil(prompt.length / n('chunk')));
  // Token i arrives at times[i]: token 0 ends the prefill; token 1 is the first decode step, where
  // ShadowKV compresses the prompt; the steps after it are the steady state.
  const t0 = performance.now();
  const times: number[] = [];
  let text = '';
  for await (const t of generate(model, cache, prompt, { maxNewTokens: n('new'), chunkTokens: n('chunk'), tokenizer, onPrefill: () => bar.tick() })) {
    times.push(performance.now() - t0);
    text += t.text;
  }
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const steady = times.length > 2 ? (times.length - 2) / ((times.at(-1)! - times[1]!) / 1000) : NaN;
  const m = cache.memory();
  const mb = (x: number) => `${(x / 2 ** 20).toFixed(1)} MB`;
  console.log(`\n${name}: ${JSON.stringify(text.slice(0, 60))}`);
  console.log(`  prefill ${(prompt.length / (times[0]! / 1000)).toFixed(0)} tokens/s (${s(times[0]!)}); first decode step ${s(times[1]! - times[0]!)}; then ${steady.toFixed(1)} tokens/s over ${times.length - 2} steps`);
  console.log(`  memory: device ${mb(m.device)}, host ${mb(m.host)} (dense cache: ${mb(m.dense)})`);
  cache.dispose();
}
model.dispose();
