// npm run eval: the accuracy evaluation (bench/eval/README.md). Writes <out>.json, .md and .svg.
//   npm run eval -- [--model <checkpoint dir> | random] [--lengths 4096,8192,16384]
//     [--budgets 0.015625,0.03,0.06] [--tasks passkey,needle_single,needle_multi,kv_lookup]
//     [--samples 10] [--policies full,shadowkv,streaming] [--chunk 512] [--out bench/results/eval (random: eval-random)]
//     [--backend wasm | cuda | auto] [--minutes M] [--resume <out>.partial.jsonl] [--variant shadowkv:chunkSize=4 ...]
// --backend cuda runs the caches and the model's projections (DeviceMatmul: gemm) on the GPU.
// Each finished prompt is appended to <out>.partial.jsonl; --resume takes such a file's prompts as
// done (same grid), and --minutes starts no prompt after that long, so a long grid runs in pieces.
// With --model random (the default) lengths default to 1024,2048,4096 and samples to 2.
import { parseArgs } from 'node:util';
import { runEval } from './run.js';
import { TASK_NAMES } from './tasks.js';

const { values: a } = parseArgs({
  options: {
    model: { type: 'string', default: 'random' },
    lengths: { type: 'string' },
    budgets: { type: 'string', default: '0.015625,0.03,0.06' },
    tasks: { type: 'string', default: TASK_NAMES.join(',') },
    samples: { type: 'string' },
    policies: { type: 'string' },
    chunk: { type: 'string', default: '512' },
    out: { type: 'string' },
    backend: { type: 'string', default: 'wasm' },
    minutes: { type: 'string' },
    resume: { type: 'string' },
    variant: { type: 'string', multiple: true },
  },
});
const nums = (s: string) => s.split(',').map(Number);
// The random model checks the machinery in about a minute; a trained one gets the issue's grid.
const random = a.model === 'random';
// A checkpoint's default stops at 16K, as far as the bundled model holds with full attention (0 % at 32K: its model card).
const lengths = a.lengths ?? (random ? '1024,2048,4096' : '4096,8192,16384');
const samples = a.samples ?? (random ? '2' : '10');
const out = a.out ?? (random ? 'bench/results/eval-random' : 'bench/results/eval');

const report = await runEval({
  model: a.model!, out, lengths: nums(lengths), budgets: nums(a.budgets!), tasks: a.tasks!.split(','),
  samples: Number(samples), chunkTokens: Number(a.chunk), backend: a.backend!, ...(a.policies ? { policies: a.policies.split(',') } : {}),
  ...(a.minutes ? { minutes: Number(a.minutes) } : {}), ...(a.resume ? { resume: a.resume } : {}), ...(a.variant ? { variants: a.variant } : {}),
  command: `npm run eval -- ${process.argv.slice(2).join(' ')}`.trim(),
});
console.log(`wrote ${out}.json, .md, .svg, .partial.jsonl (${report.answers.length} answers in ${report.seconds.toFixed(0)} s${report.notRun.length ? `; ${report.notRun.length} prompts not run: --resume ${out}.partial.jsonl goes on` : ''})`);
for (const [length, t] of Object.entries(report.timings))
  console.log(`  ${length} tokens: ${t.prompts} prompts, forward pass ${t.prefill.toFixed(2)} s; per policy run ${Object.entries(t.policies).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')} s`);
