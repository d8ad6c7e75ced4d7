// The main job: the bundled model (models/skv-small, a Llama trained here for long-context retrieval)
// reads a long haystack that hides a fact, then answers the question at its end, once with `full`
// attention and once with `shadowkv` at 1.56 % of the context, on the wasm default. It prints the
// question, both answers and whether each is right, memory per tier and tokens per second.
// Run: npm run demo -- [--tokens 8192] [--task needle_single | passkey | needle_multi | kv_lookup]
//                     [--sample 0] [--budget 0.015625] [--new 32] [--model models/skv-small] [--backend auto]
// The prompt runs through the model once with exact attention and each policy gets that prefill
// (prefill attention is exact in both, so the layers' inputs are the same): what differs is decode.
// A haystack and answer longer than the model's positions (its maxPositions: 65536 for the bundled
// model) are refused before any work, naming the limit.
import { fitCacheOptions, LlamaModel, argmax, loadCheckpoint } from '../packages/llama/src/index.js';
import { createCache, ready } from '../packages/shadowkv/src/index.js';
import { encodeSample, policyRuns, prefillOnce, replayPrefill, tokenizer } from '../bench/eval/evaluate.js';
import { drawSample, TASK_NAMES } from '../bench/eval/tasks.js';
import { cli, refuse } from './cli.js';
import { Progress } from './progress.js';

const args = cli('demo', 'the bundled model answers a question hidden in a haystack, with full and shadowkv attention', {
  model: { kind: 'string', default: 'models/skv-small', doc: 'a model folder (config.json, safetensors, tokenizer)' },
  tokens: { kind: 'int', default: 8192, min: 256, max: 1 << 22, doc: "haystack tokens (with --new, at most the model's maxPositions)" },
  task: { kind: 'choice', default: 'needle_single', of: TASK_NAMES, doc: 'what is hidden' },
  sample: { kind: 'int', default: 0, min: 0, max: 2 ** 31 - 1, doc: 'which held-out sample' },
  budget: { kind: 'number', default: 0.015625, min: 1e-4, max: 1, doc: "shadowkv's attended share of the context" },
  new: { kind: 'int', default: 32, min: 1, max: 4096, doc: 'tokens to generate' },
  backend: { kind: 'string', default: 'auto', doc: 'auto, wasm or cuda' },
  check: { kind: 'switch', doc: "check the flags and the model's positions, then stop (scripts/demo.sh, before it builds)" },
});
const budget = args.budget;

// 1. A haystack from the evaluation's held-out samples: the fact sits somewhere inside, the question ends it.
// It and the answer must fit the model's positions (RoPE past them is a context it never saw): checked
// on the checkpoint's config before the backend starts or anything runs.
const sample = drawSample(args.task, args.tokens, args.sample);
const { ids, want } = encodeSample(sample);
const newTokens = Math.max(args.new, want.length);
const checkpoint = await loadCheckpoint(args.model);
const limit = checkpoint.config.maxPositions;
if (ids.length + newTokens > limit) {
  refuse('demo', `--tokens ${args.tokens} and --new ${args.new} need ${ids.length + newTokens} positions, past the model's maxPositions ${limit} (max_position_embeddings in ${args.model}/config.json): use at most --tokens ${limit - newTokens}`);
}
if (args.check) process.exit(0);
const backend = await ready({ backend: args.backend });
using model = await LlamaModel.create(checkpoint, { backend: backend.name });
const c = model.config;
console.log(`model: ${args.model} (${c.layers} layers, hidden ${c.hiddenSize}, ${c.queryHeads} q / ${c.kvHeads} kv heads x ${c.headDim}), matmul ${model.matmul.name}`);
console.log(`backend: ${backend.description} (${backend.reason})`);
const question = sample.prompt.slice(sample.prompt.lastIndexOf('\n') + 1);
const depth = sample.prompt.indexOf(sample.answer.trim());
console.log(`\nhaystack: ${ids.length} tokens of ${args.task} (sample ${args.sample}); the fact is ${(100 * depth / sample.prompt.length).toFixed(0)} % of the way in`);
console.log(`question: ${JSON.stringify(question)}`);
console.log(`expected: ${JSON.stringify(sample.answer)}`);

// 2. ShadowKV's options for this model and prompt at the budget (the same as the evaluation's).
const fit = fitCacheOptions(model.spec, { promptTokens: ids.length, maxNewTokens: newTokens, budgetFraction: budget, hints: model.config.cacheHints });
console.log(`\nshadowkv at ${(budget * 100).toFixed(2)} % of the context:`);
for (const note of fit.notes) console.log(`  ${note}`);
const runs = policyRuns(model, ['full', 'shadowkv'], [budget], ids.length, newTokens);

// 3. The prompt once, with progress.
const chunks = Math.ceil(ids.length / 512);
const bar = new Progress('prefill', chunks);
const t0 = performance.now();
const shared = await prefillOnce(model, ids, { backend: backend.name, maxTokens: ids.length + newTokens, onProgress: () => bar.tick() });
const prefillS = (performance.now() - t0) / 1000;
console.log(`prefill: ${ids.length} tokens in ${prefillS.toFixed(1)} s (${(ids.length / prefillS).toFixed(0)} tokens/s, exact attention)\n`);

// 4. Each policy: the prefill, then greedy decoding (with progress: at 4096 new tokens it takes minutes); the answer is its first tokens.
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(2)} MiB`;
const rows: string[][] = [];
for (const run of runs) {
  using cache = await createCache({ spec: model.spec, policy: run.policy, backend: backend.name, maxTokens: ids.length + newTokens, options: run.options as never });
  replayPrefill(cache, run.policy, shared);
  const out = [argmax(shared.logits)];
  const times: number[] = [];
  // About 20 ticks whatever the length: on a pipe each tick is a line.
  const steps = newTokens - 1;
  const every = Math.max(1, Math.ceil(steps / 20));
  const decodeBar = steps > 0 ? new Progress(`${run.policy} decode`, Math.ceil(steps / every)) : undefined;
  while (out.length < newTokens) {
    const s = performance.now();
    out.push(argmax(model.forward([out.at(-1)!], cache)));
    times.push(performance.now() - s);
    if (times.length % every === 0 || times.length === steps) decodeBar?.tick();
  }
  const got = tokenizer.decode(out.slice(0, want.length));
  const right = got === sample.answer;
  // The first decode step is where ShadowKV compresses the prompt; the steady rate is over the others.
  const steady = (times.length - 1) / (times.slice(1).reduce((a, b) => a + b, 0) / 1000);
  const m = cache.memory();
  console.log(`${run.policy.padEnd(9)} answer ${JSON.stringify(got)}  ${right ? 'RIGHT' : 'WRONG'}`);
  rows.push([run.policy, right ? 'right' : 'wrong', mb(m.device), mb(m.host), mb(m.dense), `${(times[0]! / 1000).toFixed(2)} s`, steady.toFixed(1), `${cache.stats().lastAttendedTokens || cache.length()}`]);
}

const head = ['policy', 'answer', 'device tier', 'host tier', 'dense K/V', 'first step', 'tokens/s', 'attended'];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)) + 2);
console.log(`\n${head.map((h, i) => h.padStart(widths[i]!)).join('')}`);
for (const r of rows) console.log(r.map((x, i) => x.padStart(widths[i]!)).join(''));
console.log(`\n(device tier: on wasm, the part of the heap that stands for the GPU; tokens/s: greedy decode after the first step,`);
console.log(` which for shadowkv compresses the prompt; attended: tokens per kv head at the last step)`);
