// The GPU benchmark's flags, the card, and the plan both halves run (node and bench/gpu/sdpa.py):
// which contexts and batches, and the largest batches at which a whole 32-layer model fits the card.
import { cli } from '../../examples/cli.js';
import { resultsPath } from '../output.js';
import { estimateMemory, LLAMA3_8B, type ShadowKVOptions } from '../../packages/shadowkv/src/index.js';
import { WORKLOAD_DEFAULTS, type WorkloadOptions } from './workload.js';

export const MODES = ['decode', 'full', 'forced', 'hot', 'fp8', 'packed', 'largest', 'prefill'] as const;
export type Mode = (typeof MODES)[number];

/** One layer of Llama-3-8B: the benchmark's geometry (32 query heads, 8 kv heads, d = 128). */
export const SPEC = { ...LLAMA3_8B, layers: 1 };
/** ShadowKV at the paper's settings (the defaults, spelt out so the JSON says them). */
export const SHADOWKV: Required<Pick<ShadowKVOptions, 'rank' | 'chunkSize' | 'budget' | 'outlierChunks'>> = { rank: 160, chunkSize: 8, budget: 2048, outlierChunks: 48 };
const GiB = 2 ** 30;

export interface BenchArgs {
  contexts: number[];
  batches: (number | 'max')[];
  steps: number;
  warmup: number;
  /** Warm-up seconds of a decode case (beside the `warmup` steps). */
  warmupSeconds: number;
  forcedSteps: number;
  forcedRates: number[];
  /** Mode `hot`: the hot-value cache sizes (ShadowKV's `hotChunks`, slots per kv head) timed per case; mode `fp8` also times the first. */
  hotChunks: number[];
  backend: string;
  modes: Mode[];
  /** A .json path, or a folder for gpu-<card>.json (and .svg). */
  out: string;
  sdpa?: string;
  /** Write the plan here and stop (bench.sh's first step; sdpa.py reads it). */
  plan?: string;
  inputs: string;
  workload: WorkloadOptions;
  deviceGib?: number;
  weightsGib: number;
  marginGib: number;
  maxBatchCap?: number;
  caseSeconds: number;
  budgetSeconds: number;
}

/** The flags and their defaults (examples/cli.ts checks each; --help lists them). */
const FLAGS = {
  contexts: { kind: 'ints', default: [32768, 65536, 131072], min: 64, max: 1 << 22, doc: 'prompt tokens per case' },
  batches: { kind: 'ints', default: [1, 4, 16, 'max'], min: 1, max: 1 << 16, words: ['max'], doc: 'rows per case (max: the largest whole-model batch)' },
  steps: { kind: 'int', default: 50, min: 1, max: 1e6, doc: 'timed decode steps' },
  warmup: { kind: 'int', default: 10, min: 0, max: 1e6, doc: 'warm-up steps' },
  'warmup-s': { kind: 'number', default: 0.25, min: 0, max: 3600, doc: 'warm-up seconds of a decode case' },
  'forced-steps': { kind: 'int', default: 10, min: 1, max: 1e6, doc: 'steps of mode forced' },
  'forced-rates': { kind: 'numbers', default: [0, 0.6, 0.8], min: 0, max: 1, doc: 'forced hit rates' },
  'hot-chunks': { kind: 'ints', default: [512, 1024, 2048], min: 0, max: 1 << 20, doc: 'hot-value cache sizes of mode hot' },
  backend: { kind: 'string', default: 'cuda', doc: 'the backend timed' },
  modes: { kind: 'choices', default: MODES, of: MODES, doc: 'what is timed' },
  out: { kind: 'string', doc: 'a .json path, or a folder for gpu-<card>.json and .svg (default: bench/results for the documented grid, else the temp dir)' },
  sdpa: { kind: 'string', doc: "sdpa.py's timings of the plan" },
  plan: { kind: 'string', doc: 'write the plan here and stop' },
  inputs: { kind: 'choices', default: ['host-arrays', 'device-tensors'], of: ['host-arrays', 'device-tensors'], doc: 'how decode steps are fed' },
  drift: { kind: 'number', min: 0, max: 100, doc: `query drift per step (default ${WORKLOAD_DEFAULTS.drift})` },
  seed: { kind: 'int', min: 0, max: 2 ** 31 - 1, doc: `workload seed (default ${WORKLOAD_DEFAULTS.seed})` },
  'device-gib': { kind: 'number', min: 0.001, max: 1 << 20, doc: "the card's memory (default: as the device says)" },
  'weights-gib': { kind: 'number', default: 16, min: 0, max: 1 << 20, doc: "the whole model's weights, beside the largest batch" },
  'margin-gib': { kind: 'number', default: 4, min: 0, max: 1 << 20, doc: 'memory left free beside the largest batch' },
  'max-batch-cap': { kind: 'int', min: 1, max: 1 << 20, doc: 'caps the largest batch (smoke runs)' },
  'case-seconds': { kind: 'number', default: 4, min: 0, max: 1e6, doc: 'seconds per case' },
  'budget-s': { kind: 'number', default: 360, min: 0, max: 1e7, doc: 'seconds for the whole run' },
} as const;

/** The benchmark's flags (of `process.argv` without `argv`); a bad one is refused in one line (exit 2). */
export function parseBenchArgs(argv?: string[]): BenchArgs {
  const f = cli('bench/gpu/run', 'the GPU benchmark: ShadowKV decode steps, prefill compression and largest batch (bench/README.md)', FLAGS, argv);
  // Every flag but the paths is part of the grid: any of them away from its default is a trial (bench/output.ts).
  const grid = Object.fromEntries(Object.entries(FLAGS).filter(([k]) => !['out', 'sdpa', 'plan'].includes(k)).map(([k, flag]) => [k, [f[k as keyof typeof f], 'default' in flag ? flag.default : undefined] as const]));
  const out = f.plan !== undefined ? f.out ?? 'bench/results' : resultsPath('bench/gpu/run', f.out, 'bench/results', grid);
  return {
    contexts: f.contexts, batches: f.batches as (number | 'max')[],
    steps: f.steps, warmup: f.warmup, warmupSeconds: f['warmup-s'],
    forcedSteps: f['forced-steps'], forcedRates: f['forced-rates'], hotChunks: f['hot-chunks'],
    backend: f.backend, modes: f.modes as Mode[], out, sdpa: f.sdpa, plan: f.plan, inputs: f.inputs.join(','),
    workload: { ...WORKLOAD_DEFAULTS, ...(f.drift !== undefined ? { drift: f.drift } : {}), ...(f.seed !== undefined ? { seed: f.seed } : {}) },
    deviceGib: f['device-gib'], weightsGib: f['weights-gib'], marginGib: f['margin-gib'], maxBatchCap: f['max-batch-cap'],
    caseSeconds: f['case-seconds'], budgetSeconds: f['budget-s'],
  };
}

/** The accelerator, as the JSON names it. */
export interface Card {
  name: string;
  /** For file names: 'NVIDIA H200' -> 'h200'. */
  slug: string;
  totalBytes: number;
  /** The backend's description (CUDA runtime and driver versions on cuda). */
  description: string;
}

export const cardSlug = (name: string) => name.replace(/^NVIDIA\s+/i, '').toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'gpu';

/** Largest batch of a whole 32-layer model at `tokens` per row that fits next to the weights. */
export interface Largest {
  context: number;
  shadowkv: number;
  dense: number;
  totalBytes: number;
  weightsBytes: number;
  marginBytes: number;
  /** totalBytes - weights - margin. */
  availableBytes: number;
  /** At the ShadowKV batch, whole model: device (after prefill, the tail at its largest), the one-row compression transient, host (values). */
  shadowkvEstimate: { device: number; transient: number; host: number };
  denseBytesPerRow: number;
  /** Set when --max-batch-cap lowered the ShadowKV batch (smoke runs). */
  cappedFrom?: number;
}

/** What both halves run; written to plan.json for sdpa.py. */
export interface Plan {
  /** Processing order: the longest first, so a run cut short still has the targets' 128K cases. */
  contexts: number[];
  /** Per context, ascending. */
  batches: Record<number, number[]>;
  largestPerContext: Record<number, Largest>;
  /** Mode `largest`, at the longest context. */
  largest?: Largest;
  steps: number;
  warmup: number;
  modes: Mode[];
  card: Card;
}

/**
 * The whole model's largest batch at `tokens`, ShadowKV (device + the transient of rows filled and
 * compressed one at a time, as the benchmark builds them: `prefillRows: 1`) and dense (K and V).
 */
export function largestBatch(tokens: number, card: Card, a: Pick<BenchArgs, 'weightsGib' | 'marginGib' | 'maxBatchCap'>): Largest {
  const weightsBytes = a.weightsGib * GiB, marginBytes = a.marginGib * GiB;
  const available = card.totalBytes - weightsBytes - marginBytes;
  const q = { spec: LLAMA3_8B, tokens, dtype: 'bf16' as const, options: SHADOWKV };
  const shadow = (batch: number) => estimateMemory({ ...q, batch, policy: 'shadowkv', prefillRows: 1 });
  const fitsShadow = (b: number) => (({ device, transient }) => device + transient <= available)(shadow(b));
  const fitsDense = (b: number) => estimateMemory({ ...q, batch: b, policy: 'full' }).device <= available;
  const search = (fits: (b: number) => boolean) => {
    let [lo, hi] = [0, 4096]; // estimateMemory takes batches up to 4096 (OPTION_LIMITS.batch)
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      [lo, hi] = fits(mid) ? [mid, hi] : [lo, mid - 1];
    }
    return lo;
  };
  const found = search(fitsShadow);
  const b = a.maxBatchCap ? Math.min(found, a.maxBatchCap) : found;
  const est = shadow(Math.max(b, 1));
  return {
    context: tokens, shadowkv: b, dense: search(fitsDense), totalBytes: card.totalBytes, weightsBytes, marginBytes, availableBytes: available,
    shadowkvEstimate: { device: est.device, transient: est.transient, host: est.host },
    denseBytesPerRow: estimateMemory({ ...q, batch: 1, policy: 'full' }).device,
    ...(b < found ? { cappedFrom: found } : {}),
  };
}

export function makePlan(a: BenchArgs, card: Card): Plan {
  const contexts = [...new Set(a.contexts)].sort((x, y) => y - x);
  const largestPerContext = Object.fromEntries(contexts.map((S) => [S, largestBatch(S, card, a)]));
  const batches = Object.fromEntries(contexts.map((S) => {
    const bs = a.batches.map((b) => (b === 'max' ? largestPerContext[S]!.shadowkv : b)).filter((b) => b >= 1);
    return [S, [...new Set(bs)].sort((x, y) => x - y)];
  }));
  const longest = contexts[0];
  const largest = a.modes.includes('largest') && longest !== undefined ? largestPerContext[longest] : undefined;
  return { contexts, batches, largestPerContext, largest, steps: a.steps, warmup: a.warmup, modes: a.modes, card };
}
