// The hot-value cache on the bundled model: one prompt prefilled once, then greedy generation with
// `shadowkv` at the evaluation's budget and `hotChunks` at 0 and multiples of the selection. The
// generated tokens must be the same at every size (the cache changes where bytes come from, not
// them); what changes is how many misses it serves and the bytes still fetched from the host tier.
//   npx tsx bench/hotModel.ts [--tokens 8192] [--task needle_single] [--new 256] [--sizes 0,2,8,32] [--out <file.json>]
// (--sizes: multiples of the selection, budget / chunkSize). The documented run (these defaults)
// writes bench/results/hot-model.json; any other, <tmpdir>/shadowkv/hot-model.json unless --out says where.
import { writeFileSync } from 'node:fs';
import { argmax, LlamaModel } from '../packages/llama/src/index.js';
import { createCache, ready } from '../packages/shadowkv/src/index.js';
import { cli } from '../examples/cli.js';
import { encodeSample, policyRuns, prefillOnce, replayPrefill } from './eval/evaluate.js';
import { drawSample, TASK_NAMES } from './eval/tasks.js';
import { resultsPath } from './output.js';

const DOCUMENTED = { model: 'models/skv-small', tokens: 8192, task: 'needle_single', new: 256, sizes: [0, 2, 8, 32], budget: 0.015625 };
const a = cli('bench/hotModel', "the hot-value cache on the bundled model: same tokens at every size, fewer bytes fetched", {
  model: { kind: 'string', default: DOCUMENTED.model, doc: 'a model folder' },
  tokens: { kind: 'int', default: DOCUMENTED.tokens, min: 128, max: 1 << 20, doc: 'prompt tokens' },
  task: { kind: 'choice', default: DOCUMENTED.task, of: TASK_NAMES, doc: 'the prompt' },
  new: { kind: 'int', default: DOCUMENTED.new, min: 1, max: 1 << 16, doc: 'tokens to generate' },
  sizes: { kind: 'ints', default: DOCUMENTED.sizes, min: 0, max: 1 << 16, doc: 'hot-cache sizes, multiples of the selection' },
  budget: { kind: 'number', default: DOCUMENTED.budget, min: 1e-4, max: 1, doc: "shadowkv's budget, a share of the context" },
  out: { kind: 'string', doc: 'the JSON to write' },
});
const out = resultsPath('bench/hotModel', a.out, 'bench/results/hot-model.json', Object.fromEntries(Object.entries(DOCUMENTED).map(([k, v]) => [k, [a[k as keyof typeof DOCUMENTED], v] as const])));
const backend = await ready();
using model = await LlamaModel.load(a.model, { backend: backend.name });
const sample = drawSample(a.task, a.tokens, 0);
const { ids } = encodeSample(sample);
const n = a.new;
const [run] = policyRuns(model, ['shadowkv'], [a.budget], ids.length, n);
const options = run!.options as Record<string, number>;
const selected = options.budget! / options.chunkSize!;
const shared = await prefillOnce(model, ids, { backend: backend.name, maxTokens: ids.length + n });
console.log(`${a.task}, ${ids.length} prompt tokens, ${n} generated; shadowkv ${JSON.stringify(options)} (${selected} chunks selected per kv head); ${backend.description}`);
const results = [];
let reference: number[] | undefined;
for (const k of a.sizes) {
  const hotChunks = k * selected;
  using cache = await createCache({ spec: model.spec, policy: 'shadowkv', backend: backend.name, maxTokens: ids.length + n, options: { ...options, hotChunks } as never });
  replayPrefill(cache, 'shadowkv', shared);
  const out = [argmax(shared.logits)];
  while (out.length < n) out.push(argmax(model.forward([out.at(-1)!], cache)));
  reference ??= out;
  const same = out.every((t, i) => t === reference![i]);
  const s = cache.stats();
  const r = { hotChunks, sameTokens: same, hitRate: s.hitRate, hotHitRate: s.hotHitRate, onDevice: s.hitRate + (1 - s.hitRate) * s.hotHitRate, bytesFetched: s.bytesFetched, hotValues: cache.memory().components.hotValues ?? 0 };
  results.push(r);
  console.log(`hotChunks ${String(hotChunks).padStart(5)}: tokens ${same ? 'same' : 'DIFFERENT'}, hit rate ${s.hitRate.toFixed(3)}, hot ${s.hotHitRate.toFixed(3)} of misses, on device ${r.onDevice.toFixed(3)}, fetched ${(s.bytesFetched / 2 ** 20).toFixed(2)} MiB, cache ${(r.hotValues / 2 ** 20).toFixed(2)} MiB`);
}
writeFileSync(out, `${JSON.stringify({ date: new Date().toISOString(), command: `npx tsx bench/hotModel.ts ${process.argv.slice(2).join(' ')}`, backend: backend.description, task: a.task, promptTokens: ids.length, generated: n, options, results }, null, 1)}\n`);
