// One decode step of ShadowKV against full attention on the wasm backend: one Llama-3-8B layer,
// batch 1, bf16 storage, ShadowKV defaults (budget 2048, rank 160, chunk 8), a needle prompt.
import { createCache, LLAMA3_8B, type Cache, type MemoryReport, type ShadowKVCache, type Tensor } from '../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../examples/workloads/needle.js';
import { median } from './ops.bench.js';

/** One context length's result. */
export interface DecodeTiming {
  context: number;
  /** Median ms per decode step. */
  shadowkv_ms: number;
  full_ms: number;
  /** full_ms / shadowkv_ms. */
  speedup: number;
  /** ShadowKV's hit rate over every step run (warm-up included; the first step is all misses). */
  hitRate: number;
  /** Tokens attended per kv head at the last step (outliers + selected + tail). */
  attendedTokens: number;
  /** The needle's chunk is in the last step's selection of every kv head. */
  needleSelected: boolean;
  /** Cosine of ShadowKV's and full's outputs at the last step. */
  cosine: number;
  /** Prefill wall time: ShadowKV's includes its compression (factorization, landmarks, offload). */
  prefill_ms: { shadowkv: number; full: number };
  memory: { shadowkv: MemoryReport; full: MemoryReport };
  steps: { warmup: number; timed: number };
}

export interface DecodeBenchOptions {
  contexts?: number[];
  warmup?: number;
  timed?: number;
  log?: (line: string) => void;
}

const SPEC = { ...LLAMA3_8B, layers: 1 };
const CHUNK = 8; // ShadowKV's default chunk size, for the needle's chunk id

function cosine(a: Tensor, b: Tensor): number {
  const x = a.data as Float32Array, y = b.data as Float32Array;
  let xy = 0, xx = 0, yy = 0;
  for (let i = 0; i < x.length; i++) {
    xy += x[i]! * y[i]!;
    xx += x[i]! * x[i]!;
    yy += y[i]! * y[i]!;
  }
  return xy / Math.sqrt(xx * yy);
}

/** Wall time of one call in ms, and its result. */
function timed<T>(fn: () => T): [number, T] {
  const t = performance.now();
  const r = fn();
  return [performance.now() - t, r];
}

async function benchContext(tokens: number, warmup: number, steps: number, log: (line: string) => void): Promise<DecodeTiming> {
  const label = `${tokens / 1024}K`;
  log(`decode ${label}: generating the needle prompt (${tokens} tokens)`);
  const workload = new NeedleWorkload(SPEC, { tokens, keyRank: 32 });
  let prompt: ReturnType<NeedleWorkload['prompt']> | undefined = workload.prompt(0, 1);
  // Every step's input is made up front (outside the timing) and fed to both caches.
  const inputs = Array.from({ length: warmup + steps }, () => workload.step(0, 1));

  const make = (policy: string) => createCache({ spec: SPEC, policy, batch: 1, dtype: 'bf16', backend: 'wasm' });
  const shadow = (await make('shadowkv')) as Cache & ShadowKVCache;
  const full = await make('full');
  log(`decode ${label}: prefill shadowkv (upload, RoPE, compression)`);
  const [shadowPrefill] = timed(() => shadow.prefill(0, prompt!));
  log(`decode ${label}: prefill full`);
  const [fullPrefill] = timed(() => full.prefill(0, prompt!));
  prompt = undefined; // ~1 GB of f32 at 128K; the caches hold their own copies now

  log(`decode ${label}: ${warmup} warm-up steps of each, then ${steps} timed steps, interleaved`);
  for (let i = 0; i < warmup; i++) {
    shadow.decode(0, inputs[i]!);
    full.decode(0, inputs[i]!);
  }
  // Interleaved A,B,A,B so that machine noise (other processes, GC, frequency) hits both alike.
  const shadowMs: number[] = [];
  const fullMs: number[] = [];
  let outs: [Tensor, Tensor] | undefined;
  for (let i = warmup; i < warmup + steps; i++) {
    const [a, outA] = timed(() => shadow.decode(0, inputs[i]!));
    const [b, outB] = timed(() => full.decode(0, inputs[i]!));
    shadowMs.push(a);
    fullMs.push(b);
    outs = [outA, outB];
  }

  const needle = workload.needleChunk(CHUNK);
  const needleSelected = Array.from({ length: SPEC.kvHeads }, (_, h) => shadow.selection(0, 0, h).includes(needle)).every(Boolean);
  const stats = shadow.stats();
  const result: DecodeTiming = {
    context: tokens,
    shadowkv_ms: median(shadowMs),
    full_ms: median(fullMs),
    speedup: 0,
    hitRate: stats.hitRate,
    attendedTokens: stats.lastAttendedTokens,
    needleSelected,
    cosine: cosine(outs![0], outs![1]),
    prefill_ms: { shadowkv: shadowPrefill, full: fullPrefill },
    memory: { shadowkv: shadow.memory(), full: full.memory() },
    steps: { warmup, timed: steps },
  };
  result.speedup = result.full_ms / result.shadowkv_ms;
  // Each cache owns a wasm instance (its own heap); dispose and drop both before the next context.
  shadow.dispose();
  full.dispose();
  log(`decode ${label}: shadowkv ${result.shadowkv_ms.toFixed(2)} ms, full ${result.full_ms.toFixed(2)} ms per step (${result.speedup.toFixed(2)}x)`);
  return result;
}

/** Runs every context in turn (default 32K and 128K). */
export async function benchDecodeStep(o: DecodeBenchOptions = {}): Promise<DecodeTiming[]> {
  const results: DecodeTiming[] = [];
  for (const tokens of o.contexts ?? [32768, 131072]) {
    results.push(await benchContext(tokens, o.warmup ?? 10, o.timed ?? 30, o.log ?? (() => {})));
  }
  return results;
}
