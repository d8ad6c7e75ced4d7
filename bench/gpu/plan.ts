// The GPU benchmark's flags, the card, and the plan both halves run (node and bench/gpu/sdpa.py):
// which contexts and batches, and the largest batches at which a whole 32-layer model fits the card.
import { parseArgs } from 'node:util';
import { estimateMemory, LLAMA3_8B, type ShadowKVOptions } from '../../packages/shadowkv/src/index.js';
import { WORKLOAD_DEFAULTS, type WorkloadOptions } from './workload.js';

export const MODES = ['decode', 'full', 'forced', 'hot', 'fp8', 'largest', 'prefill'] as const;
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
  /** Print `USAGE` and stop. */
  help: boolean;
}

const list = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
const num = (name: string, s: string) => {
  const v = Number(s);
  if (!Number.isFinite(v)) throw new RangeError(`--${name}: expected a number, got '${s}'`);
  return v;
};

/** The flags and their defaults: parseArgs's table, and what --help lists. */
const OPTIONS = {
  contexts: { type: 'string', default: '32768,65536,131072' }, batches: { type: 'string', default: '1,4,16,max' },
  steps: { type: 'string', default: '50' }, warmup: { type: 'string', default: '10' }, 'warmup-s': { type: 'string', default: '0.25' },
  'forced-steps': { type: 'string', default: '10' }, 'forced-rates': { type: 'string', default: '0,0.6,0.8' },
  'hot-chunks': { type: 'string', default: '512,1024,2048' },
  backend: { type: 'string', default: 'cuda' }, modes: { type: 'string', default: MODES.join(',') },
  out: { type: 'string', default: 'bench/results' }, sdpa: { type: 'string' }, plan: { type: 'string' },
  inputs: { type: 'string', default: 'host-arrays,device-tensors' }, drift: { type: 'string' }, seed: { type: 'string' },
  'device-gib': { type: 'string' }, 'weights-gib': { type: 'string', default: '16' }, 'margin-gib': { type: 'string', default: '4' },
  'max-batch-cap': { type: 'string' }, 'case-seconds': { type: 'string', default: '4' }, 'budget-s': { type: 'string', default: '360' },
  help: { type: 'boolean' },
} as const;

/** What --help prints: every flag with its default. */
export const USAGE = `usage: npx tsx bench/gpu/run.ts [flags]   (what they mean: bench/README.md)\n${Object.entries(OPTIONS)
  .map(([name, o]) => `  --${name}${'default' in o ? ` ${o.default}` : o.type === 'string' ? ' <value>' : ''}`).join('\n')}`;

export function parseBenchArgs(argv: string[]): BenchArgs {
  const { values: f } = parseArgs({ args: argv, options: OPTIONS });
  const modes = list(f.modes!);
  const bad = modes.filter((m) => !(MODES as readonly string[]).includes(m));
  if (bad.length) throw new RangeError(`--modes: unknown ${bad.join(', ')}; known: ${MODES.join(', ')}`);
  return {
    contexts: list(f.contexts!).map((s) => num('contexts', s)),
    batches: list(f.batches!).map((s) => (s === 'max' ? 'max' : num('batches', s))),
    steps: num('steps', f.steps!), warmup: num('warmup', f.warmup!), warmupSeconds: num('warmup-s', f['warmup-s']!),
    forcedSteps: num('forced-steps', f['forced-steps']!), forcedRates: list(f['forced-rates']!).map((s) => num('forced-rates', s)),
    hotChunks: list(f['hot-chunks']!).map((s) => num('hot-chunks', s)),
    backend: f.backend!, modes: modes as Mode[], out: f.out!, sdpa: f.sdpa, plan: f.plan, inputs: f.inputs!,
    workload: { ...WORKLOAD_DEFAULTS, ...(f.drift ? { drift: num('drift', f.drift) } : {}), ...(f.seed ? { seed: num('seed', f.seed) } : {}) },
    deviceGib: f['device-gib'] === undefined ? undefined : num('device-gib', f['device-gib']),
    weightsGib: num('weights-gib', f['weights-gib']!), marginGib: num('margin-gib', f['margin-gib']!),
    maxBatchCap: f['max-batch-cap'] === undefined ? undefined : num('max-batch-cap', f['max-batch-cap']),
    caseSeconds: num('case-seconds', f['case-seconds']!), budgetSeconds: num('budget-s', f['budget-s']!), help: f.help ?? false,
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

/** The whole model's largest batch at `tokens`, ShadowKV (device + one compression's transient) and dense (K and V). */
export function largestBatch(tokens: number, card: Card, a: Pick<BenchArgs, 'weightsGib' | 'marginGib' | 'maxBatchCap'>): Largest {
  const weightsBytes = a.weightsGib * GiB, marginBytes = a.marginGib * GiB;
  const available = card.totalBytes - weightsBytes - marginBytes;
  const q = { spec: LLAMA3_8B, tokens, dtype: 'bf16' as const, options: SHADOWKV };
  const shadow = (batch: number) => estimateMemory({ ...q, batch, policy: 'shadowkv' });
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
