// The timed parts of the GPU benchmark: a cache built row by row (each ShadowKV row compressed
// right after its prefill, timed), decode steps with drifting queries, and steps at forced hit rates.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  at, HEAD_FIELD, HEAD_FIELDS, type BaseKVCache, type CacheOf, type DecodeInput, type MemoryReport, type OptionsOf,
  type ShadowKVCache, type ShadowKVOptions, type ShadowState, type Tensor, type View, COUNTER, COUNTERS, type DeviceBuffer, type DeviceTensor,
} from '../../packages/shadowkv/src/backend.js';
import { rng } from '../../examples/workloads/random.js';
import { compressStages } from '../../packages/shadowkv/src/policies/shadowkv/compress.js';
import { cosine } from '../../packages/shadowkv/src/testing/metrics.js';
import { benchCache, StepClock, type BenchDevice } from './device.js';
import { SHADOWKV, SPEC } from './plan.js';
import type { DriftingQueries } from './workload.js';

export interface Summary {
  median: number;
  min: number;
  mean: number;
  n: number;
}

export function summary(xs: number[]): Summary {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)] ?? NaN, min: s[0] ?? NaN, mean: s.reduce((a, b) => a + b, 0) / Math.max(s.length, 1), n: s.length };
}

// ------------------------------------------------------------------------------------------------
// Building

export interface BuildInfo {
  rows: number;
  seconds: number;
  /** prefill() per row, synchronized. */
  prefill_ms: Summary;
  /** compress({ sequences: [row] }) per row, synchronized (ShadowKV); the samples in row order. */
  compress_ms?: Summary & { samples: number[] };
  memory: MemoryReport;
}

export interface Built<C extends BaseKVCache> {
  cache: C;
  device: BenchDevice;
  clock: StepClock;
  build: BuildInfo;
}

/**
 * A one-layer cache of `batch` rows, each prefilled with the prompt (keys and values only) and, for
 * ShadowKV, compressed at once. `extra`: ShadowKV options on top of the paper's (e.g. `hotChunks`).
 */
export async function buildCache<P extends 'shadowkv' | 'full'>(
  policy: P, backend: string, batch: number, prompt: { keys: Tensor; values: Tensor }, log: (line: string) => void, extra: ShadowKVOptions = {},
): Promise<Built<CacheOf<P>>> {
  const t0 = performance.now();
  const options = (policy === 'shadowkv' ? { ...SHADOWKV, ...extra } : undefined) as OptionsOf<P>;
  // Capacity: the prompt and room for every timed phase's steps (creation checks that it fits the GPU).
  const maxTokens = prompt.keys.shape[2]! + 8192;
  const { cache, device } = await benchCache({ spec: SPEC, policy, batch, dtype: 'bf16', backend, maxTokens, options });
  const clock = new StepClock(device);
  const prefill: number[] = [], compress: number[] = [];
  const stages = process.env.SKV_BENCH_STAGES === '1' ? stageClock(clock) : undefined;
  let said = t0;
  try {
    for (let b = 0; b < batch; b++) {
      prefill.push(wall(clock, () => cache.prefill(0, { ...prompt, sequences: [b] })));
      if (policy === 'shadowkv') {
        stages?.start();
        compress.push(wall(clock, () => (cache as ShadowKVCache).compress({ sequences: [b] })));
        if (stages) log(`  compress() row ${b} by stage (synchronized between stages): ${stages.take()}`);
      }
      if (performance.now() - said > 10_000) {
        log(`  ${policy}: ${b + 1}/${batch} rows in`);
        said = performance.now();
      }
    }
  } catch (err) {
    cache.dispose();
    throw err;
  } finally {
    compressStages.end = undefined;
  }
  const build: BuildInfo = { rows: batch, seconds: (performance.now() - t0) / 1000, prefill_ms: summary(prefill), memory: cache.memory() };
  if (compress.length) build.compress_ms = { ...summary(compress), samples: compress };
  return { cache, device, clock, build };
}

/**
 * SKV_BENCH_STAGES=1: wall ms of each stage of compress() (compress.ts calls `end` as one ends),
 * waiting for the device at each end, so that a stage is charged its own GPU work. The waits cost
 * the overlap of the value copies: the synchronized total is the sum of the stages, not the real time.
 */
function stageClock(clock: StepClock): { start(): void; take(): string } {
  let times: [string, number][] = [];
  let last = 0;
  compressStages.end = (stage) => {
    clock.sync();
    const now = performance.now();
    times.push([stage, now - last]);
    last = now;
  };
  return {
    start: () => {
      times = [];
      last = performance.now();
    },
    // A stage reached several times (once per kv head) is summed, with its count.
    take: () => {
      const by = new Map<string, [number, number]>();
      for (const [s, ms] of times) by.set(s, [(by.get(s)?.[0] ?? 0) + ms, (by.get(s)?.[1] ?? 0) + 1]);
      const parts = [...by].map(([s, [ms, n]]) => `${s} ${ms.toFixed(2)}${n > 1 ? ` (x${n})` : ''}`);
      return parts.join(', ') + ` ms (sum ${times.reduce((a, [, ms]) => a + ms, 0).toFixed(2)})`;
    },
  };
}

/** Wall ms of work that does not read back, waiting for the device before and after. */
function wall(clock: StepClock, work: () => void): number {
  clock.sync();
  const t = performance.now();
  work();
  clock.sync();
  return performance.now() - t;
}

// ------------------------------------------------------------------------------------------------
// Decode steps

/**
 * A model loop's own input arrays and a function that writes step x's inputs into them (untimed).
 * NOTE: read from arrays made before the loop (~100 steps x 96 KB at 4 rows), decode()'s value
 * checks found them in DRAM, not in cache as a loop that has just computed them does
 * (bench/NOTES.md v34: 20 us a 4-row step on the H200's host, against 2-3 us warm).
 */
export function hostLoop(first: DecodeInput): { loop: DecodeInput; write(x: DecodeInput): void } {
  const own = (t: DecodeInput['query']) => ({ ...t, data: t.data.slice() });
  const loop = { query: own(first.query), key: own(first.key), value: own(first.value) };
  return { loop, write: (x) => void (loop.query.data.set(x.query.data), loop.key.data.set(x.key.data), loop.value.data.set(x.value.data)) };
}

/** Step x's inputs uploaded to device tensors of the cache (its dispose() frees any left). */
export function deviceInput(cache: BaseKVCache, x: DecodeInput): DecodeInput<DeviceTensor> {
  const up = (t: DecodeInput['query']) => cache.allocTensor(t.shape, t.dtype, t.data);
  return { query: up(x.query), key: up(x.key), value: up(x.value) };
}

/** How a timed step's inputs reach decode(). */
export interface InputMode {
  note: string;
  /** A function that readies step i (untimed) and returns the call to time. */
  feed(cache: BaseKVCache, inputs: DecodeInput[]): (i: number) => () => void;
}

export const INPUT_MODES: Record<string, InputMode> = {
  'host-arrays': {
    note: 'q, k and v as host Float32Arrays that decode() stages to the device, written just before each timed call (as a model loop writes its projections); the output read back into one reused host array',
    feed: (cache, inputs) => {
      const out = new Float32Array(inputs[0]!.query.data.length);
      const { loop, write } = hostLoop(inputs[0]!);
      const step = () => void cache.decode(0, loop, { out });
      return (i) => (write(inputs[i]!), step);
    },
  },
  'device-tensors': {
    note: 'q, k and v uploaded to device tensors before the timed steps, the output left in a device tensor, checkValues off (a hot loop on the GPU, docs/cuda.md): decode() moves nothing and waits for nothing, so its wall time is what the host spends issuing a step',
    feed: (cache, inputs) => {
      const staged = inputs.map((x) => deviceInput(cache, x)); // freed with the case's cache
      const q = inputs[0]!.query.shape;
      const out = cache.allocTensor([q[0]!, q[1]!, 1, q[3]!], inputs[0]!.query.dtype);
      // NOTE: with checks on, a device tensor's values are checked on the GPU and one result per input read
      // back: a wait per call, which made this mode's wall time 0.35 ms against 0.25 for host arrays at 1 x 128K (H200).
      return (i) => () => void cache.decode(0, staged[i]!, { out, checkValues: false });
    },
  },
};

export interface SparseStats {
  /** Selected chunks already in their slots: hits / (hits + misses). */
  hitRate: number;
  missesPerStep: number;
  /** Misses the hot-value cache served (0 without one): hot hits / misses. */
  hotHitRate: number;
  /** Selected chunks that did not cross PCIe: (hits + hot hits) / (hits + misses). */
  deviceHitRate: number;
  /** Host -> device bytes per step: misses not served by the hot-value cache x the host tier's chunk bytes (`stats().bytesFetched`: C x d x 2 in bf16, `fp8ChunkBytes(C, d)` under fp8Values). */
  pcieBytesPerStep: number;
  /** Tokens attended per (row, kv head) at the last step. */
  attendedTokens: number;
}

export interface DecodeTiming {
  warmup: number;
  steps: number;
  /** Steps of the second pass that timed the fused step's kernels (0 without one). */
  kernelSteps: number;
  /**
   * GPU ms per step: `method` says how. With a fused step on a device with events: the steps of a
   * third pass issued back to back with their outputs left on the device (as a model loop on the GPU
   * runs them), events around the pass / steps; else the kernels of each call, or the calls' span.
   */
  gpu_ms: number;
  method: string;
  /** CUDA events around each fused decodeLayer call, / calls (includes the host issuing the step's kernels to an idle GPU). */
  call_gpu_ms?: number;
  /** CUDA events around all timed decode() calls (and the untimed readying between them), / steps. */
  span_ms: number;
  /** performance.now() around each decode() call: mean and median. */
  wall_ms: number;
  wall_median_ms: number;
  sparse?: SparseStats;
}

/** The layer's cumulative hits, misses, hot hits (read from its counters on the device) and bytes fetched. */
function hitCounts(cache: BaseKVCache): { hits: number; misses: number; hot: number; bytes: number } {
  // NOTE: reaches into the cache (protected): stats() gives rates, the bench needs the counts.
  const buf = (cache as unknown as { layerCounters(layer: number): DeviceBuffer }).layerCounters(0);
  const c = (cache as unknown as { device: { read(v: View, n: number): Float64Array } }).device.read(at(buf), COUNTERS);
  return { hits: c[COUNTER.hits]!, misses: c[COUNTER.misses]!, hot: c[COUNTER.hotHits]!, bytes: cache.stats().bytesFetched };
}

// Untimed steps between the collection before a timed loop (wall or queued) and the loop, so
// that the loop starts as a model's loop runs, with the GPU busy: making the loop's inputs and the
// collection leave the GPU idle for tens of milliseconds, and SDPA's timing (sdpa.py) runs its
// warm-up calls right before its timed ones. NOTE: side by side on the H200, two rounds each
// (bench/NOTES.md v31), the queued GPU time without these steps and with them: 4 x 128K 0.250 /
// 0.255 -> 0.241 / 0.238 ms, 1 x 128K 0.120 / 0.109 -> 0.103 / 0.101, own full at 4 x 128K 0.531 /
// 0.535 -> 0.520 / 0.520.
const SETTLE_STEPS = 8;

// A full collection just before timed steps (wall or queued), so the harness's own garbage (the warm-up's inputs and
// the timed steps' ~100 KB of q | k | v a step at 4 x 128K, external memory) is not collected inside
// them. NOTE: node --trace-gc on the H200 showed three scavenges and two mark-compacts (0.4-1.5 ms
// each) within a 4 x 128K case's 50 timed steps, which put the mean wall time 37 us above the median
// (bench/NOTES.md v29); decode() itself allocates ~nothing (bench/gpu/host.ts runs 50K steps
// without a collection).
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

/**
 * Warm-up, then timed steps. Two warm-up steps give the step time; the rest of the warm-up and
 * the timed steps are cut so a case takes about `caseSeconds` (a slow path still finishes).
 */
export function timeDecode(b: Built<BaseKVCache>, queries: DriftingQueries, o: { warmup: number; warmupSeconds: number; steps: number; caseSeconds: number }, mode: InputMode): DecodeTiming {
  const { cache, clock } = b;
  const out = new Float32Array(queries.batch * SPEC.queryHeads * SPEC.headDim);
  const step = () => {
    const input = queries.next();
    const t = performance.now();
    cache.decode(0, input, { out });
    return performance.now() - t;
  };
  step();
  const ms = Math.max(step(), 1e-3);
  const budget = o.caseSeconds * 1000;
  // At least `warmup` steps and `warmupSeconds`, within a quarter of the case. NOTE: with 10 steps
  // (~3 ms) the first case of a run read 1 x 128K at 0.199 ms with host arrays against 0.160 after
  // 0.25 s of steps (its device-tensor twin 0.157 / 0.156; H200, one call).
  const cap = Math.max(2, Math.floor(budget / 4 / ms)), until = performance.now() + 1000 * o.warmupSeconds;
  let warmup = 2;
  for (; warmup < cap && (warmup < o.warmup || performance.now() < until); warmup++) step();
  const steps = Math.min(o.steps, Math.max(5, Math.floor(budget / ms)));
  // With a fused step the kernels are timed in a pass of their own, so their events do not add to the wall time.
  const kernelSteps = clock.kernelTimer ? Math.max(3, Math.floor(steps / 2)) : 0;
  const inputs = Array.from({ length: steps + kernelSteps + SETTLE_STEPS }, () => queries.next());
  const ready = mode.feed(cache, inputs);
  const sparse = cache.name === 'shadowkv';
  const before = sparse ? hitCounts(cache) : undefined;
  const walls: number[] = [];
  collectGarbage();
  for (let i = steps + kernelSteps; i < inputs.length; i++) ready(i)();
  const span = clock.span(() => {
    for (let i = 0; i < steps; i++) {
      const run = ready(i);
      const t = performance.now();
      run();
      walls.push(performance.now() - t);
    }
  });
  clock.kernels = true;
  clock.takeKernel();
  for (let i = steps; i < steps + kernelSteps; i++) ready(i)();
  const kernel = clock.takeKernel();
  clock.kernels = false;
  const queued = kernelSteps ? timeQueued(b, queries, kernelSteps) : undefined;
  const w = summary(walls);
  const timing: DecodeTiming = {
    warmup, steps, kernelSteps, gpu_ms: queued ?? (kernel.calls ? kernel.ms / kernel.calls : span / steps),
    method: queued ? QUEUED_METHOD : clock.method, ...(kernel.calls ? { call_gpu_ms: kernel.ms / kernel.calls } : {}),
    span_ms: span / steps, wall_ms: w.mean, wall_median_ms: w.median,
  };
  if (before) {
    const after = hitCounts(cache);
    const [hits, misses, hot, n] = [after.hits - before.hits, after.misses - before.misses, after.hot - before.hot, steps + kernelSteps + SETTLE_STEPS + (queued ? (kernelSteps + SETTLE_STEPS) * QUEUED_WINDOWS + QUEUED_WARMUP : 0)];
    timing.sparse = {
      hitRate: hits / (hits + misses), missesPerStep: misses / n, hotHitRate: misses ? hot / misses : 0, deviceHitRate: (hits + hot) / (hits + misses),
      pcieBytesPerStep: (after.bytes - before.bytes) / n, attendedTokens: cache.stats().lastAttendedTokens,
    };
  }
  return timing;
}

// Windows of queued steps, whose median is the figure. NOTE: one window of 25 steps read 1 x 128K
// at 0.145 ms in one run (81b78f8) where three later runs of the same step read 0.108-0.110: a
// pause of the host inside a window of ~3 ms moves its mean (bench/NOTES.md v23).
const QUEUED_WINDOWS = 5;

const QUEUED_METHOD = `CUDA events around back-to-back decode() calls whose outputs stay on the device (host-array inputs), / steps; the median of ${QUEUED_WINDOWS} such windows`;

// Untimed steps into the queued pass's output tensor first: a step's CUDA graph is captured the
// second time its arguments come (kernels/decode_layer.cu), and a new output is a new argument; 16
// steps see every upload block with and without a compaction twice.
export const QUEUED_WARMUP = 16;

/** GPU ms per step: the median over QUEUED_WINDOWS windows of `steps` steps issued back to back, each output left in one device tensor. */
export function timeQueued(b: Built<BaseKVCache>, queries: DriftingQueries, steps: number): number {
  const out = b.cache.allocTensor([queries.batch, SPEC.queryHeads, 1, SPEC.headDim], 'f32');
  try {
    for (let i = 0; i < QUEUED_WARMUP; i++) b.cache.decode(0, queries.next(), { out });
    const windows = Array.from({ length: QUEUED_WINDOWS }, () => {
      const inputs = Array.from({ length: steps + SETTLE_STEPS }, () => queries.next());
      collectGarbage(); // a collection inside the window would stall the host, and could drain the GPU's queue
      inputs.splice(0, SETTLE_STEPS).forEach((input) => b.cache.decode(0, input, { out }));
      return b.clock.span(() => inputs.forEach((input) => b.cache.decode(0, input, { out }))) / steps;
    });
    return summary(windows).median;
  } finally {
    out.dispose();
  }
}

// ------------------------------------------------------------------------------------------------
// Output error (mode fp8)

/** One cache's outputs against another's over the same steps. */
export interface OutputError {
  /** max |got - ref| over every step's output / `valueScale`. */
  maxRel: number;
  /** The largest magnitude among the values the outputs average (the prompt's). */
  valueScale: number;
  /** Cosine of got and ref per (step, row, query head) output vector, averaged. */
  meanCos: number;
  steps: number;
}

/** Outputs of `steps` drifting decode steps, each read back into a host array of its own. */
export function stepOutputs(cache: BaseKVCache, queries: DriftingQueries, steps: number): Float32Array[] {
  return Array.from({ length: steps }, () => {
    const out = new Float32Array(queries.batch * SPEC.queryHeads * SPEC.headDim);
    cache.decode(0, queries.next(), { out });
    return out;
  });
}

/** max |x| (an indexed loop: for-of took ~9x as long over a 128K prompt's values). */
export function maxAbs(xs: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < xs.length; i++) m = Math.max(m, Math.abs(xs[i]!));
  return m;
}

/**
 * `got` against `ref`, the error relative to `valueScale` (`maxAbs` of the values): the scale of
 * fp8's rounding, each value within 2^-4 of its row's largest, so an output (an average of values
 * with the same weights: keys are not quantized) is within 2^-4 of it too.
 */
export function outputError(got: Float32Array[], ref: Float32Array[], valueScale: number): OutputError {
  const d = SPEC.headDim;
  let diff = 0, cos = 0, n = 0;
  ref.forEach((r, step) => {
    const g = got[step]!;
    r.forEach((x, i) => (diff = Math.max(diff, Math.abs(g[i]! - x))));
    for (let o = 0; o < r.length; o += d, n++) cos += cosine(g, r, o, o + d);
  });
  return { maxRel: diff / valueScale, valueScale, meanCos: cos / n, steps: ref.length };
}

// ------------------------------------------------------------------------------------------------
// Forced hit rates

export interface ForcedTiming {
  /** Fraction of each head's selected slots left valid before a step. */
  rate: number;
  steps: number;
  /** Per step, each timed on its own (the invalidation before it is not counted). */
  gpu_ms: Summary;
  wall_ms: Summary;
  /** Measured over the timed steps. */
  hitRate: number;
  missesPerStep: number;
  pcieBytesPerStep: number;
}

/**
 * Steps at forced hit rates: with a pinned query (the same after RoPE at every position, see
 * `DriftingQueries.pinned`) every selected chunk is held after a warm step;
 * before each timed step a random (1 - rate) of each head's selected slots is marked empty (-1 in
 * the store's `selectedIds`), so those chunks miss: fetched and rebuilt again.
 */
export function timeForced(b: Built<ShadowKVCache>, queries: DriftingQueries, rates: number[], o: { forcedSteps: number; caseSeconds: number; seed: number }): ForcedTiming[] {
  const { cache, clock } = b;
  const rand = rng(o.seed);
  const out = new Float32Array(queries.batch * SPEC.queryHeads * SPEC.headDim);
  const pinned = () => queries.pinned(Array.from({ length: queries.batch }, (_, row) => cache.length(row)));
  for (let i = 0; i < 2; i++) cache.decode(0, pinned(), { out });
  return rates.map((rate) => {
    const gpu: number[] = [], walls: number[] = [];
    let hits = 0, misses = 0, bytes = 0, steps = 0;
    // Up to forcedSteps steps, at least 3, within a share of caseSeconds (a slow path still finishes).
    const until = performance.now() + (1000 * o.caseSeconds) / rates.length;
    clock.kernels = true;
    for (; steps < o.forcedSteps && (steps < 3 || performance.now() < until); steps++) {
      invalidate(b, 1 - rate, rand);
      const input = pinned();
      clock.takeKernel();
      const t = performance.now();
      const span = clock.span(() => cache.decode(0, input, { out }));
      walls.push(performance.now() - t);
      const kernel = clock.takeKernel();
      gpu.push(kernel.calls ? kernel.ms : span);
      const s = cache.stats();
      [hits, misses, bytes] = [hits + s.lastHits, misses + s.lastMisses, bytes + s.lastBytesFetched];
    }
    clock.kernels = false;
    return { rate, steps, gpu_ms: summary(gpu), wall_ms: summary(walls), hitRate: hits / (hits + misses), missesPerStep: misses / steps, pcieBytesPerStep: bytes / steps };
  });
}

/** Marks a random `fraction` of every (row, kv head)'s selected slots empty, through the cache's device. */
function invalidate(b: Built<ShadowKVCache>, fraction: number, rand: () => number): void {
  // NOTE: reaches into the cache's rows (protected); the bench needs the store's device handles.
  const rows = (b.cache as unknown as { states: ShadowState[][] }).states[0]!;
  for (const { store } of rows) {
    if (!store) continue;
    const { heads, maxSelected } = store.geometry;
    const counts = store.headCountsNow();
    const ids = b.device.read(at(store.selectedIds) as View & { buf: { dtype: 'i32' } }, heads * maxSelected);
    for (let h = 0; h < heads; h++) {
      const n = counts[h * HEAD_FIELDS + HEAD_FIELD.selected]!;
      const slots = Int32Array.from({ length: n }, (_, i) => i);
      for (let i = 0; i < Math.round(fraction * n); i++) {
        const j = i + Math.floor(rand() * (n - i));
        [slots[i], slots[j]] = [slots[j]!, slots[i]!];
        ids[h * maxSelected + slots[i]!] = -1;
      }
    }
    b.device.write(at(store.selectedIds), ids);
  }
}
