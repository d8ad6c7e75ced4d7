// One evaluation end to end: the model (a checkpoint, or a tiny random one), the grid, and the
// outputs <out>.json, <out>.md and <out>.svg, with a progress bar on stderr.
import { appendFileSync, existsSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname } from 'node:path';
import { checkpointFiles, LlamaModel, randomWeights, readCheckpoint, type LlamaConfig } from '../../packages/llama/src/index.js';
import { resolveBackend } from '../../packages/shadowkv/src/backends/registry.js';
import { Progress } from '../../examples/progress.js';
import { evaluate, type Answer, type EvalSettings, type PolicyRun, type PromptDone } from './evaluate.js';
import { cells, markdownTable, plotSvg, type Cell } from './report.js';
import { TASK_SPEC } from './tasks.js';

/** The `--model random` checkpoint: byte vocabulary, tiny, random weights (accuracy is meaningless; the machinery runs). */
export const RANDOM_CONFIG: LlamaConfig = {
  vocabSize: TASK_SPEC.vocab.bytes + TASK_SPEC.vocab.specials.length, hiddenSize: 64, intermediateSize: 128, layers: 2,
  queryHeads: 4, kvHeads: 2, headDim: 16, rmsNormEps: 1e-5, ropeTheta: 500000, maxPositions: 65536,
  tieWordEmbeddings: true, attentionBias: false, mlpBias: false, eosTokenIds: [257],
};

export interface RunOptions extends Omit<EvalSettings, 'onPrompt' | 'earlier' | 'deadline' | 'onAnswers'> {
  /** A checkpoint folder, or `'random'`. */
  model: string;
  /**
   * Output path without extension. Each finished prompt is appended to `<out>.partial.jsonl` as it
   * ends; an existing one is refused unless `resume` is that file (it would be rewritten).
   */
  out: string;
  /** A `.partial.jsonl` of an earlier run of the same grid: its prompts are taken, not run again. */
  resume?: string;
  /** Start no new prompt after this many minutes; the outputs then say which prompts were not run. */
  minutes?: number;
  /** The command line, recorded in the JSON. */
  command?: string;
  /** Progress bar stream. Default stderr. */
  progress?: NodeJS.WriteStream;
}

/** What `<out>.json` holds. */
export interface EvalReport {
  date: string;
  machine: string;
  command: string;
  model: { path: string; parameters: number; layers: number; hidden: number; queryHeads: number; kvHeads: number; headDim: number };
  settings: Omit<EvalSettings, 'onPrompt' | 'earlier' | 'deadline' | 'onAnswers'>;
  runs: Record<number, PolicyRun[]>;
  seconds: number;
  /** Prompts (`task@length#index`) not run before `--minutes` ran out. */
  notRun: string[];
  /** Mean seconds per prompt of this run (not the resumed ones), per length: the exact forward pass, and each policy run. */
  timings: Record<number, { prompts: number; prefill: number; policies: Record<string, number> }>;
  cells: Cell[];
  answers: Answer[];
}

/** The model, its projections on `backend`'s device where that is not wasm (LlamaModel's default matmul). */
async function loadModel(path: string, backend: string): Promise<LlamaModel> {
  if (path !== 'random') return LlamaModel.load(path, { backend });
  const files = checkpointFiles(RANDOM_CONFIG, randomWeights(RANDOM_CONFIG, { seed: 1 }));
  return LlamaModel.create(readCheckpoint((name) => files.get(name)), { backend });
}

export async function runEval(o: RunOptions): Promise<EvalReport> {
  const start = performance.now();
  const startedAt = Date.now(); // --minutes counts from here, model loading included
  const backend = o.backend ?? 'wasm';
  const { model: _m, out, command, progress, resume, minutes, ...settings } = o;
  // The resume file first: a missing one read as empty would rewrite the partial file with nothing.
  const earlier = resume ? readPartial(resume) : [];
  const partial = checkPartial(out, resume);
  using model = await loadModel(o.model, backend);
  const c = model.config;
  // A prompt of `length` tokens holds its answer too (drawSample): past maxPositions the model never trained.
  const over = settings.lengths.filter((l) => l > c.maxPositions);
  if (over.length) throw new RangeError(`eval: lengths ${over.join(', ')} are past the model's maxPositions ${c.maxPositions} (max_position_embeddings in its config.json)`);
  const parameters = c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2)
    + c.layers * (c.hiddenSize * c.headDim * 2 * (c.queryHeads + c.kvHeads) + 3 * c.hiddenSize * c.intermediateSize);
  mkdirSync(dirname(out), { recursive: true });
  // The partial file holds every finished prompt, the resumed ones first, so it can resume again;
  // it is rewritten even when resumed from itself, which drops a torn last line before lines are appended.
  writeFileSync(partial, earlier.map((p) => `${JSON.stringify(p)}\n`).join(''));
  const timed: PromptDone[] = [];
  const bar = new Progress('eval', settings.tasks.length * settings.lengths.length * settings.samples, progress ?? process.stderr);
  const { answers, runs, notRun } = await evaluate(model, {
    ...settings, backend, onPrompt: (_d, _t, note) => bar.tick(note), earlier: earlier.flatMap((p) => p.answers),
    ...(minutes !== undefined ? { deadline: startedAt + minutes * 60_000 } : {}),
    onAnswers: (p) => {
      timed.push(p);
      appendFileSync(partial, `${JSON.stringify(p)}\n`);
    },
  });
  const all = cells(answers);
  const report: EvalReport = {
    date: new Date().toISOString(),
    machine: `${os.cpus()[0]?.model ?? 'cpu'} x ${os.cpus().length}, Node ${process.version}, ${(await resolveBackend(backend)).backend.description}, matmul ${model.matmul.name}`,
    command: command ?? 'npm run eval',
    model: { path: o.model, parameters, layers: c.layers, hidden: c.hiddenSize, queryHeads: c.queryHeads, kvHeads: c.kvHeads, headDim: c.headDim },
    settings, runs, seconds: (performance.now() - start) / 1000, notRun, timings: timings(timed), cells: all, answers,
  };
  writeFileSync(`${out}.json`, `${JSON.stringify(report, null, 1)}\n`);
  const title = `Retrieval accuracy: ${o.model === 'random' ? 'random tiny model (machinery check only)' : o.model}, ${settings.samples} samples per cell`;
  const missing = notRun.length ? `\n\nNot run (\`--minutes ${minutes}\` ran out): ${notRun.length} prompts; the cells show how many they hold.` : '';
  const resumed = earlier.length ? ` ${earlier.length} prompts came from an earlier run (\`--resume\`).` : '';
  const legend = '\n\nEach cell: exact answers, then · the output agreement with `full` at the first answer step (mean cosine of the attention outputs over layers and heads, on the same inputs).';
  writeFileSync(`${out}.md`, `# ${title}\n\n${report.date.slice(0, 16)} UTC, ${report.machine}; \`${report.command}\`; ${report.seconds.toFixed(0)} s.${resumed}${missing}${legend}\n\n${markdownTable(all)}`);
  writeFileSync(`${out}.svg`, plotSvg(all, title));
  return report;
}

/**
 * `<out>.partial.jsonl`, which the run rewrites; a RangeError (main.ts: a refused flag) when it exists
 * and the run does not resume from it: its prompts (hours of a long grid) would be lost.
 */
function checkPartial(out: string, resume: string | undefined): string {
  const partial = `${out}.partial.jsonl`;
  if (!existsSync(partial) || (resume !== undefined && realpathSync(resume) === realpathSync(partial))) return partial;
  const instead = resume !== undefined ? `, and --resume ${resume} would replace them` : '';
  throw new RangeError(`eval: out ${out}: ${partial} holds the prompts of an earlier run${instead}; --resume ${partial} goes on from them, another --out keeps them, or delete the file to start over`);
}

/** The prompts of a `.partial.jsonl`; a last line cut short by a killed run is left out. A missing file is an error. */
function readPartial(path: string): PromptDone[] {
  if (!existsSync(path)) throw new Error(`eval: resume: ${path}: no such file (it must be a <out>.partial.jsonl an earlier run wrote)`);
  const out: PromptDone[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as PromptDone);
    } catch {
      // NOTE: only a partly written last line can fail to parse: each line is written whole by appendFileSync.
    }
  }
  return out;
}

/** Mean seconds per prompt and length: the forward pass and each policy run. */
function timings(done: readonly PromptDone[]): EvalReport['timings'] {
  const t: EvalReport['timings'] = {};
  for (const p of done) {
    const at = (t[p.length] ??= { prompts: 0, prefill: 0, policies: {} });
    at.prompts += 1;
    at.prefill += (p.prefillSeconds - at.prefill) / at.prompts;
    for (const [k, v] of Object.entries(p.policySeconds)) at.policies[k] = (at.policies[k] ?? 0) + (v - (at.policies[k] ?? 0)) / at.prompts;
  }
  return t;
}
