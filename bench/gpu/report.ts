// The GPU benchmark's JSON (bench/results/gpu-<card>.json): its shape, what bench/gpu/sdpa.py adds,
// and the issue's targets computed from it (PASS / MISS with the measured ratio).
import type { MemoryReport } from '../../packages/shadowkv/src/index.js';
import type { BuildInfo, DecodeTiming, ForcedTiming, OutputError, Summary } from './measure.js';
import type { Card, Largest, Plan } from './plan.js';
import type { WorkloadOptions } from './workload.js';

/** A timing of bench/gpu/sdpa.py: the fastest variant, and every variant tried (ms, or why it failed). */
export interface SdpaTiming {
  context: number;
  batch: number;
  best?: { variant: string; ms: number };
  variants: Record<string, number | string>;
}

/** What bench/gpu/sdpa.py writes. */
export interface SdpaReport {
  torch: string;
  cuda: string | null;
  cudnn: number | null;
  device: { name: string; totalBytes: number };
  /** Dense decode, q [B, 32, 1, 128], k/v [B, 8, S, 128] bf16: CUDA events around back-to-back calls. */
  decode: SdpaTiming[];
  /** Causal prefill attention, q [1, 32, S, 128], k/v [1, 8, S, 128] bf16 (batch 1). */
  prefill: SdpaTiming[];
  copy?: { bytes: number; ms: number; GBps: number } | { error: string };
  eigh?: { rows: number; cols: number; gram_ms: number; eigh_ms: number } | { error: string };
  seconds: number;
  errors: string[];
}

export interface CaseResult {
  context: number;
  batch: number;
  /** A dense bf16 K and V of this case: batch x context x 8 kv heads x 128 x 2 bytes x 2. */
  denseKvBytes: number;
  build?: BuildInfo;
  /** Drifting queries. `speedup` = SDPA ms / gpu_ms; equivalent bandwidth = denseKvBytes / gpu_ms. */
  shadowkv?: DecodeTiming & { speedup?: number; equivalentTBps: number };
  /** The same steps fed by the other `--inputs` modes (the first mode is `shadowkv`'s). */
  inputModes?: Record<string, DecodeTiming>;
  forced?: ForcedTiming[];
  /** Mode `hot`: the same drifting steps with a hot-value cache of `hotChunks` slots per kv head (outputs unchanged). */
  hot?: (DecodeTiming & { hotChunks: number; speedup?: number })[];
  /**
   * Mode `fp8`: the same drifting steps with values in fp8 on the host tier (`fp8`), and with the first
   * `--hot-chunks` size too (`fp8+hot N`); `outputError` against bf16 values, measured on one row per context.
   */
  fp8?: (DecodeTiming & { label: string; hotChunks?: number; speedup?: number; outputError: OutputError })[];
  /**
   * Mode `packed`: the same drifting steps with the host tier's values packed (`packedValues`:
   * lossless, outputs unchanged); `packedShare` of the prompt's value chunks pack, so a fetch moves
   * `fetchRatio` of the bytes that `sparse.pcieBytesPerStep` counts (whole chunks).
   */
  packed?: DecodeTiming & { speedup?: number; packedShare: number; fetchRatio: number };
  full?: { build: BuildInfo; decode: DecodeTiming; speedOfSdpa?: number };
  sdpa?: SdpaTiming;
  skipped?: string[];
}

export interface LargestResult extends Largest {
  /** One layer's share at the ShadowKV batch, allocated, prefilled and compressed. */
  confirmed: { allocated: boolean; error?: string; memory?: MemoryReport; estimateOneLayer: { device: number; host: number }; freeBytesAfter?: number };
  /** Host memory the whole model needs at that batch (estimateMemory's host). */
  hostBytesWholeModel: number;
  /** Decode throughput per layer, each at its own largest batch: batch / step time. */
  throughput: { shadowkv?: { batch: number; gpu_ms: number; tokensPerSecond: number }; dense?: { batch: number; sdpa_ms: number; tokensPerSecond: number } };
}

export interface PrefillResult {
  context: number;
  /** compress() of one row of one layer, synchronized; every built row but each cache's first (warm-up). */
  compress_ms: Summary;
  /** The same, each cache's first row. */
  firstRow_ms: number[];
  sdpaCausal?: SdpaTiming;
}

export interface Target {
  id: string;
  what: string;
  measured: number | null;
  threshold: number;
  better: 'higher' | 'lower';
  /** >= 1 passes: measured / threshold, or threshold / measured when lower is better. */
  ratio: number | null;
  pass: boolean | null;
  note?: string;
}

export interface Report {
  date: string;
  command: string;
  commit: string | null;
  card: Card;
  versions: { node: string; backend: string; torch?: string; cuda?: string | null; cudnn?: number | null };
  workload: {
    geometry: { queryHeads: number; kvHeads: number; headDim: number; layers: number; dtype: 'bf16' };
    shadowkv: Record<string, number>;
    prompt: WorkloadOptions & { note: string };
    inputs: { mode: string; note: string };
    step: string;
  };
  plan: Plan;
  cases: CaseResult[];
  largest?: LargestResult;
  prefill: PrefillResult[];
  python?: Pick<SdpaReport, 'copy' | 'eigh' | 'errors' | 'seconds'>;
  targets: Target[];
  /** Seconds per phase of the node run. */
  phases: Record<string, number>;
  skipped: string[];
}

const K128 = 131072;

function target(id: string, what: string, measured: number | null | undefined, threshold: number, better: 'higher' | 'lower', note?: string): Target {
  const m = measured === undefined || measured === null || !Number.isFinite(measured) ? null : measured;
  const ratio = m === null ? null : better === 'higher' ? m / threshold : threshold / m;
  return { id, what, measured: m, threshold, better, ratio, pass: ratio === null ? null : ratio >= 1, ...(note ? { note } : {}) };
}

/** The issue's targets, from whatever the run measured (a target without its inputs is N/A). */
export function computeTargets(r: Report): Target[] {
  const at = (batch: number) => r.cases.find((c) => c.context === K128 && c.batch === batch);
  const [b4, b1] = [at(4), at(1)];
  const speed = (c?: CaseResult) => (c?.sdpa?.best && c.shadowkv ? c.sdpa.best.ms / c.shadowkv.gpu_ms : null);
  const tp = r.largest?.throughput;
  const composed = b4?.shadowkv && !/fused|back to back|back-to-back/.test(b4.shadowkv.method) ? 'the step is not fused yet: gpu_ms is the span of the calls, so this ratio says little' : undefined;
  const capped = r.largest?.cappedFrom ? `batch capped by --max-batch-cap (would be ${r.largest.cappedFrom})` : undefined;
  return [
    target('decode-4x128K', 'decode step at 4 x 128K: SDPA ms / ShadowKV GPU ms', speed(b4), 2.5, 'higher'),
    target('decode-1x128K', 'decode step at 1 x 128K: SDPA ms / ShadowKV GPU ms', speed(b1), 1.5, 'higher'),
    target('bandwidth-4x128K', 'equivalent bandwidth at 4 x 128K, TB/s (dense K+V bytes / step time)', b4?.shadowkv?.equivalentTBps, 11, 'higher'),
    target('largest-batch', 'largest batch at 128K, whole model next to 16 GiB of weights: ShadowKV / dense', r.largest && r.largest.dense > 0 ? r.largest.shadowkv / r.largest.dense : null, 6, 'higher', capped),
    target('largest-throughput', 'tokens/s per layer, each at its own largest batch: ShadowKV / dense', tp?.shadowkv && tp.dense ? tp.shadowkv.tokensPerSecond / tp.dense.tokensPerSecond : null, 3, 'higher', capped),
    target('full-vs-sdpa', 'own full policy at 4 x 128K: its speed as a fraction of SDPA\'s (SDPA ms / full GPU ms)', b4?.full?.speedOfSdpa, 0.9, 'higher'),
    target('js-overhead-4x128K', 'cache.decode() wall time / GPU time at 4 x 128K', b4?.shadowkv ? b4.shadowkv.wall_ms / b4.shadowkv.gpu_ms : null, 1.3, 'lower', composed),
    target('prefill-compress-128K', 'compress() of one 128K row of one layer, ms (median)', r.prefill.find((p) => p.context === K128)?.compress_ms.median, 15, 'lower'),
    target('hot-4x128K', 'past the targets: decode at 4 x 128K with the hot-value cache (mode hot, its best size): SDPA ms / GPU ms', bestHot(b4), 4, 'higher', 'the issue\'s aim, not a target'),
  ];
}

/** The best speedup over SDPA among a case's hot-value cache sizes. */
function bestHot(c?: CaseResult): number | null {
  const s = (c?.hot ?? []).map((h) => h.speedup ?? NaN).filter(Number.isFinite);
  return s.length ? Math.max(...s) : null;
}

/** One line per target: PASS / MISS / N/A, measured, threshold, ratio. */
export function targetLines(targets: Target[]): string[] {
  return targets.map((t) => {
    const verdict = t.pass === null ? 'N/A ' : t.pass ? 'PASS' : 'MISS';
    const m = t.measured === null ? 'not measured' : t.measured.toPrecision(4);
    const ratio = t.ratio === null ? '' : ` (ratio ${t.ratio.toFixed(2)})`;
    return `${verdict} ${t.id}: ${m} ${t.better === 'higher' ? '>=' : '<='} ${t.threshold}${ratio}${t.note ? ` [${t.note}]` : ''}`;
  });
}
