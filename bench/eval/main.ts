// npm run eval: the accuracy evaluation (bench/eval/README.md). Writes <out>.json, .md and .svg.
//   npm run eval -- [--model <checkpoint dir> | random] [--lengths 4096,8192,16384]
//     [--budgets 0.015625,0.03,0.06] [--tasks passkey,needle_single,needle_multi,kv_lookup]
//     [--samples 10] [--policies full,shadowkv,streaming] [--chunk 512] [--out <path without extension>]
//     [--backend wasm | cuda | auto] [--minutes M] [--resume <out>.partial.jsonl] [--variant shadowkv:chunkSize=4 ...]
// --backend cuda runs the caches and the model's projections (DeviceMatmul: gemm) on the GPU.
// Each finished prompt is appended to <out>.partial.jsonl; --resume takes such a file's prompts as
// done (same grid), and --minutes starts no prompt after that long, so a long grid runs in pieces.
// A run that would rewrite an existing <out>.partial.jsonl it does not --resume from is refused (exit 2).
// With --model random (the default) lengths default to 1024,2048,4096 and samples to 2.
// Output: --out; else the documented grid (no --lengths, --budgets, --tasks, --samples, --policies,
// --chunk or --variant away from its defaults) writes bench/results/eval-random (random) or
// bench/results/eval (a checkpoint), and any other grid, a trial, <tmpdir>/shadowkv/ with those names.
// Every flag is checked before the model loads (a missing --resume file is refused, not read as empty).
import { existsSync } from 'node:fs';
import { listPolicies } from '../../packages/shadowkv/src/index.js';
import { cli, refuse } from '../../examples/cli.js';
import { resultsPath } from '../output.js';
import { parseVariant } from './evaluate.js';
import { runEval } from './run.js';
import { TASK_NAMES } from './tasks.js';

const BUDGETS = [0.015625, 0.03, 0.06];
const args = cli('eval', 'retrieval accuracy of every policy at long context (bench/eval/README.md)', {
  model: { kind: 'string', default: 'random', doc: 'a checkpoint folder, or random (a tiny random model: the machinery only)' },
  lengths: { kind: 'ints', min: 128, max: 1 << 20, doc: 'prompt lengths in tokens (default 1024,2048,4096 random; 4096,8192,16384 a checkpoint)' },
  budgets: { kind: 'numbers', default: BUDGETS, min: 1e-4, max: 1, doc: 'budgets, shares of the context' },
  tasks: { kind: 'choices', default: TASK_NAMES, of: TASK_NAMES, doc: 'tasks' },
  samples: { kind: 'int', min: 1, max: 100_000, doc: 'prompts per task and length (default 2 random; 10 a checkpoint)' },
  policies: { kind: 'choices', of: listPolicies(), doc: 'policies (default every registered one)' },
  chunk: { kind: 'int', default: 512, min: 1, max: 1 << 20, doc: 'prompt tokens per prefill call' },
  out: { kind: 'string', doc: 'output path without extension (default: see the header of bench/eval/main.ts)' },
  backend: { kind: 'choice', default: 'wasm', of: ['wasm', 'cuda', 'auto'], doc: 'the caches and the projections' },
  minutes: { kind: 'number', min: 0, max: 1e6, doc: 'start no prompt after this many minutes' },
  resume: { kind: 'string', doc: 'a .partial.jsonl of an earlier run of the same grid: its prompts are taken as done' },
  variant: { kind: 'strings', doc: 'a policy with options changed, e.g. shadowkv:chunkSize=4' },
});
for (const v of args.variant) {
  try {
    parseVariant(v);
  } catch (err) {
    refuse('eval', `--variant ${(err as Error).message.replace(/^eval: variant /, '')}`);
  }
}
if (args.resume !== undefined && !existsSync(args.resume)) refuse('eval', `--resume ${args.resume}: no such file (it must be a <out>.partial.jsonl an earlier run wrote)`);
// The random model checks the machinery in about a minute; a trained one gets the issue's grid.
const random = args.model === 'random';
// A checkpoint's default stops at 16K, as far as the bundled model holds with full attention (0 % at 32K: its model card).
const documented = { lengths: random ? [1024, 2048, 4096] : [4096, 8192, 16384], samples: random ? 2 : 10 };
const lengths = args.lengths ?? documented.lengths;
const samples = args.samples ?? documented.samples;
const out = resultsPath('eval', args.out, random ? 'bench/results/eval-random' : 'bench/results/eval', {
  lengths: [lengths, documented.lengths], budgets: [args.budgets, BUDGETS], tasks: [args.tasks, TASK_NAMES], samples: [samples, documented.samples],
  policies: [args.policies, undefined], chunk: [args.chunk, 512], variant: [args.variant, []],
});

// A length past the model's positions is known once its config is read: refused as a bad flag too.
const report = await runEval({
  model: args.model, out, lengths, budgets: args.budgets, tasks: args.tasks, samples, chunkTokens: args.chunk, backend: args.backend,
  ...(args.policies ? { policies: args.policies } : {}), ...(args.minutes !== undefined ? { minutes: args.minutes } : {}),
  ...(args.resume ? { resume: args.resume } : {}), ...(args.variant.length ? { variants: args.variant } : {}),
  command: `npm run eval -- ${process.argv.slice(2).join(' ')}`.trim(),
}).catch((err: Error) => (err instanceof RangeError ? refuse('eval', `--${err.message.replace(/^eval: /, '')}`) : Promise.reject(err)));
console.log(`wrote ${out}.json, .md, .svg, .partial.jsonl (${report.answers.length} answers in ${report.seconds.toFixed(0)} s${report.notRun.length ? `; ${report.notRun.length} prompts not run: --resume ${out}.partial.jsonl goes on` : ''})`);
for (const [length, t] of Object.entries(report.timings))
  console.log(`  ${length} tokens: ${t.prompts} prompts, forward pass ${t.prefill.toFixed(2)} s; per policy run ${Object.entries(t.policies).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')} s`);
