// One evaluation end to end: the model (a checkpoint, or a tiny random one), the grid, and the
// outputs <out>.json, <out>.md and <out>.svg, with a progress bar on stderr.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname } from 'node:path';
import { checkpointFiles, LlamaModel, randomWeights, readCheckpoint, type LlamaConfig } from '../../packages/llama/src/index.js';
import { Progress } from '../../examples/progress.js';
import { evaluate, type Answer, type EvalSettings, type PolicyRun } from './evaluate.js';
import { cells, markdownTable, plotSvg, type Cell } from './report.js';
import { TASK_SPEC } from './tasks.js';

/** The `--model random` checkpoint: byte vocabulary, tiny, random weights (accuracy is meaningless; the machinery runs). */
export const RANDOM_CONFIG: LlamaConfig = {
  vocabSize: TASK_SPEC.vocab.bytes + TASK_SPEC.vocab.specials.length, hiddenSize: 64, intermediateSize: 128, layers: 2,
  queryHeads: 4, kvHeads: 2, headDim: 16, rmsNormEps: 1e-5, ropeTheta: 500000, maxPositions: 65536,
  tieWordEmbeddings: true, attentionBias: false, mlpBias: false, eosTokenIds: [257],
};

export interface RunOptions extends Omit<EvalSettings, 'onPrompt'> {
  /** A checkpoint folder, or `'random'`. */
  model: string;
  /** Output path without extension. */
  out: string;
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
  settings: Omit<EvalSettings, 'onPrompt'>;
  runs: Record<number, PolicyRun[]>;
  seconds: number;
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
  const backend = o.backend ?? 'wasm';
  using model = await loadModel(o.model, backend);
  const c = model.config;
  const parameters = c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2)
    + c.layers * (c.hiddenSize * c.headDim * 2 * (c.queryHeads + c.kvHeads) + 3 * c.hiddenSize * c.intermediateSize);
  const { model: _m, out, command, progress, ...settings } = o;
  const bar = new Progress('eval', settings.tasks.length * settings.lengths.length * settings.samples, progress ?? process.stderr);
  const { answers, runs } = await evaluate(model, { ...settings, backend, onPrompt: (_d, _t, note) => bar.tick(note) });
  const all = cells(answers);
  const report: EvalReport = {
    date: new Date().toISOString(),
    machine: `${os.cpus()[0]?.model ?? 'cpu'} x ${os.cpus().length}, Node ${process.version}, ${backend} backend, matmul ${model.matmul.name}`,
    command: command ?? 'npm run eval',
    model: { path: o.model, parameters, layers: c.layers, hidden: c.hiddenSize, queryHeads: c.queryHeads, kvHeads: c.kvHeads, headDim: c.headDim },
    settings, runs, seconds: (performance.now() - start) / 1000, cells: all, answers,
  };
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(`${out}.json`, `${JSON.stringify(report, null, 1)}\n`);
  const title = `Retrieval accuracy: ${o.model === 'random' ? 'random tiny model (machinery check only)' : o.model}, ${settings.samples} samples per cell`;
  writeFileSync(`${out}.md`, `# ${title}\n\n${report.date.slice(0, 16)} UTC, ${report.machine}; \`${report.command}\`; ${report.seconds.toFixed(0)} s.\n\n${markdownTable(all)}`);
  writeFileSync(`${out}.svg`, plotSvg(all, title));
  return report;
}
