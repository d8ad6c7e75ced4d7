// One decode step of ShadowKV against full attention on the wasm backend: one Llama-3-8B layer,
// batch 1 and 4, bf16 storage, ShadowKV defaults (budget 2048, rank 160, chunk 8), a needle prompt.
import { createCache, LLAMA3_8B, type MemoryReport, type Tensor } from '../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../examples/workloads/needle.js';
import { median } from './ops.bench.js';
import { cosine, relError } from '../examples/workloads/metrics.js';

/** One context length's result. */
export interface DecodeTiming {
  context: number;
  batch: number;
  /** Median ms per decode step. */
  shadowkv_ms: number;
  full_ms: number;
  /** full_ms / shadowkv_ms. */
  speedup: number;
  /** ShadowKV's hit rate over every step run (warm-up included; the first step is all misses). */
  hitRate: number;
  /** Tokens attended per kv head at the last step (outliers + selected + tail). */
  attendedTokens: number;
  /** The needle's chunk is in the last step's selection of every row and kv head. */
  needleSelected: boolean;
  /** Cosine of ShadowKV's and full's outputs at the last step (worst row). */
  cosine: number;
  /** Relative error |shadowkv - full| / |full| at the last step (worst row). */
  relError: number;
  /** Prefill wall time, all rows: ShadowKV's includes its compression (factorization, landmarks, offload). */
  prefill_ms: { shadowkv: number; full: number };
  memory: { shadowkv: MemoryReport; full: MemoryReport };
  steps: { warmup: number; timed: number };
  /** The same steps through another version of the SDK, timed in the same loop (see `DecodeBenchOptions.compare`). */
  compared?: { label: string; shadowkv_ms: number; full_ms: number; cosine: number };
}

/** What the benchmark needs of an SDK build: `createCache` and the caches it makes. */
export interface SdkUnderTest {
  createCache(o: Record<string, unknown>): Promise<BenchCache>;
}

/** The calls the benchmark makes on a cache, common to every version of the SDK compared. */
interface BenchCache {
  prefill(layer: number, input: { keys: Tensor; values: Tensor; sequences?: number[] }): unknown;
  decode(layer: number, input: { query: Tensor; key: Tensor; value: Tensor }): Tensor;
  compress?(o: { sequences: number[] }): number;
  dispose(): void;
}

export interface DecodeBenchOptions {
  contexts?: number[];
  batches?: number[];
  /** Another build of the SDK (e.g. the previous commit's checkout) whose caches take the same steps, interleaved. */
  compare?: { label: string; sdk: SdkUnderTest };
  warmup?: number;
  timed?: number;
  log?: (line: string) => void;
}

const SPEC = { ...LLAMA3_8B, layers: 1 };
const CHUNK = 8; // ShadowKV's default chunk size, for the needle's chunk id

/** Worst row's cosine and relative error of a against b, rows of n elements. */
function agreement(a: Tensor, b: Tensor, rows: number): { cosine: number; relError: number } {
  const n = a.data.length / rows;
  let worstCos = 1, worstErr = 0;
  for (let r = 0; r < rows; r++) {
    const x = (a.data as Float32Array).subarray(r * n, (r + 1) * n), y = (b.data as Float32Array).subarray(r * n, (r + 1) * n);
    worstCos = Math.min(worstCos, cosine(x, y));
    worstErr = Math.max(worstErr, relError(x, y));
  }
  return { cosine: worstCos, relError: worstErr };
}

/** Wall time of one call in ms, and its result. */
function timed<T>(fn: () => T): [number, T] {
  const t = performance.now();
  const r = fn();
  return [performance.now() - t, r];
}

async function benchContext(tokens: number, batch: number, warmup: number, steps: number, log: (line: string) => void, compare?: DecodeBenchOptions['compare']): Promise<DecodeTiming> {
  const label = `${tokens / 1024}K x ${batch}`;
  const workload = new NeedleWorkload(SPEC, { tokens, keyRank: 32 });
  // Every step's input is made up front (outside the timing) and fed to every cache.
  const inputs = Array.from({ length: warmup + steps }, () => workload.step(0, batch));
  // Capacity of the prompt and every step: creation checks that it fits the 4 GB heap.
  const opts = { spec: SPEC, batch, dtype: 'bf16', backend: 'wasm', maxTokens: tokens + warmup + steps } as const;
  const shadow = await createCache({ ...opts, policy: 'shadowkv' });
  const full = await createCache({ ...opts, policy: 'full' });
  const other = compare && { shadowkv: await compare.sdk.createCache({ ...opts, policy: 'shadowkv' }), full: await compare.sdk.createCache({ ...opts, policy: 'full' }) };
  // Row by row, each compressed once its prompt is in: the peak stays at one dense row.
  let shadowPrefill = 0, fullPrefill = 0;
  for (let b = 0; b < batch; b++) {
    log(`decode ${label}: row ${b}: generating the needle prompt (${tokens} tokens), prefill and compression`);
    const prompt = { ...workload.prompt(0, 1), sequences: [b] };
    shadowPrefill += timed(() => {
      shadow.prefill(0, prompt);
      shadow.compress({ sequences: [b] });
    })[0];
    fullPrefill += timed(() => full.prefill(0, prompt))[0];
    if (other) {
      other.shadowkv.prefill(0, prompt);
      other.shadowkv.compress?.({ sequences: [b] });
      other.full.prefill(0, prompt);
    }
  }

  log(`decode ${label}: ${warmup} warm-up steps of each, then ${steps} timed steps, interleaved`);
  const caches: BenchCache[] = [shadow, full, ...(other ? [other.shadowkv, other.full] : [])];
  for (let i = 0; i < warmup; i++) for (const c of caches) c.decode(0, inputs[i]!);
  // Interleaved A, B, (C, D,) A, B, ... so that machine noise (other processes, GC, frequency) hits all alike.
  const ms: number[][] = caches.map(() => []);
  let outs: Tensor[] = [];
  for (let i = warmup; i < warmup + steps; i++) {
    outs = caches.map((c, j) => {
      const [t, out] = timed(() => c.decode(0, inputs[i]!));
      ms[j]!.push(t);
      return out;
    });
  }
  const [shadowMs, fullMs] = ms as [number[], number[]];

  const needle = workload.needleChunk(CHUNK);
  const needleSelected = Array.from({ length: batch * SPEC.kvHeads }, (_, i) => shadow.selection(0, Math.floor(i / SPEC.kvHeads), i % SPEC.kvHeads).includes(needle)).every(Boolean);
  const stats = shadow.stats();
  const result: DecodeTiming = {
    context: tokens,
    batch,
    shadowkv_ms: median(shadowMs),
    full_ms: median(fullMs),
    speedup: 0,
    hitRate: stats.hitRate,
    attendedTokens: stats.lastAttendedTokens,
    needleSelected,
    ...agreement(outs[0]!, outs[1]!, batch),
    prefill_ms: { shadowkv: shadowPrefill, full: fullPrefill },
    memory: { shadowkv: shadow.memory(), full: full.memory() },
    steps: { warmup, timed: steps },
  };
  result.speedup = result.full_ms / result.shadowkv_ms;
  if (compare) result.compared = { label: compare.label, shadowkv_ms: median(ms[2]!), full_ms: median(ms[3]!), cosine: agreement(outs[2]!, outs[0]!, batch).cosine };
  // Each cache owns a wasm instance (its own heap); dispose and drop them before the next context.
  caches.forEach((c) => c.dispose());
  log(`decode ${label}: shadowkv ${result.shadowkv_ms.toFixed(2)} ms, full ${result.full_ms.toFixed(2)} ms per step (${result.speedup.toFixed(2)}x)` +
    (result.compared ? `; ${compare!.label}: shadowkv ${result.compared.shadowkv_ms.toFixed(2)} ms, full ${result.compared.full_ms.toFixed(2)} ms` : ''));
  return result;
}

/** Runs every (context, batch) in turn (default 32K and 128K, batch 1 and 4). */
export async function benchDecodeStep(o: DecodeBenchOptions = {}): Promise<DecodeTiming[]> {
  const results: DecodeTiming[] = [];
  for (const tokens of o.contexts ?? [32768, 131072]) {
    for (const batch of o.batches ?? [1, 4]) results.push(await benchContext(tokens, batch, o.warmup ?? 10, o.timed ?? 30, o.log ?? (() => {}), o.compare));
  }
  return results;
}
