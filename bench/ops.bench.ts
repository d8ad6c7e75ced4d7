// Timings of the runtime's hot ops on the wasm backend, through the Device API a policy uses.
// NOTE: shapes, dtypes and method mirror bench/native/bench_ops.cc; keep the two lists equal, so
// that wasm_ms / native_ms compares one build of the same C++ against the other.
import { at, resolveBackend, ropeFrequencies, type Device, type DeviceBuffer } from '../packages/shadowkv/src/backend.js';
import { randn, rng } from '../examples/workloads/random.js';
import { put, zerosOn } from '../test/helpers/device.js';

/** One op's result: median milliseconds per call. */
export interface OpTiming {
  op: string;
  shape: string;
  ms: number;
}

/** Median of a list (the list is sorted in place). */
export function median(xs: number[]): number {
  xs.sort((a, b) => a - b);
  return xs[Math.floor(xs.length / 2)]!;
}

/**
 * One warm-up call, then the median of timed calls: at least `minReps`, and enough for ~0.3 s of
 * timed work so fast ops are not one noisy sample (the native harness uses the same rule).
 */
export function timeOp(fn: () => void, minReps: number): number {
  let t = performance.now();
  fn();
  const warm = performance.now() - t;
  const reps = Math.max(minReps, Math.min(2000, Math.ceil(300 / Math.max(warm, 1e-3))));
  const ms: number[] = [];
  for (let r = 0; r < reps; r++) {
    t = performance.now();
    fn();
    ms.push(performance.now() - t);
  }
  return median(ms);
}

const rand = rng(42); // fixed seed: every run times the same inputs
const randBuf = (device: Device, n: number, dtype: 'f32' | 'bf16'): DeviceBuffer => put(device, randn(n, rand), dtype);
const range = (n: number, f: (i: number) => number) => Int32Array.from({ length: n }, (_, i) => f(i));

/** Times every op once on one fresh wasm device; `log` gets one line per op as it finishes. */
export async function benchOps(log: (line: string) => void = () => {}): Promise<OpTiming[]> {
  const { backend } = await resolveBackend('wasm');
  const device = backend.createDevice();
  const results: OpTiming[] = [];
  const bench = (op: string, shape: string, minReps: number, fn: () => void) => {
    const ms = timeOp(fn, minReps);
    results.push({ op, shape, ms });
    log(`  wasm ${op} (${shape}): ${ms.toFixed(3)} ms`);
  };
  const d = 128;
  const scale = 0.0884; // the native harness's 1/sqrt(128), rounded the same way
  // Llama-3 theta without scaling, as the native harness computes inv_freq.
  const invFreq = put(device, ropeFrequencies(d, { theta: 500000 }), 'f64');

  { // gemm
    const n = 512;
    const a = randBuf(device, n * n, 'f32'), b = randBuf(device, n * n, 'f32'), c = zerosOn(device, n * n, 'f32');
    bench('gemm', 'M=N=K=512', 20, () => device.gemm({ M: n, N: n, K: n, a: at(a), lda: n, b: at(b), ldb: n, c: at(c), ldc: n }));
    [a, b, c].forEach((x) => device.free(x));
  }
  { // low_rank_keys
    const S = 8192, D = 1024, rank = 160;
    const k = randBuf(device, S * D, 'f32');
    const out = { u: zerosOn(device, S * rank, 'f32'), sv: zerosOn(device, rank * D, 'f32'), proj: zerosOn(device, D * rank, 'f32'), sigma: zerosOn(device, rank, 'f32') };
    const views = { u: at(out.u), sv: at(out.sv), proj: at(out.proj), sigma: at(out.sigma) };
    bench('low_rank_keys', 'S=8192 D=1024 rank=160 oversample=16 power_iters=2', 3, () => device.lowRankKeys(at(k), S, D, rank, 16, 2, 1, views));
    [k, ...Object.values(out)].forEach((x) => device.free(x));
  }
  { // score_chunks
    const g = 4, n = 16384;
    const q = randBuf(device, g * d, 'f32'), L = randBuf(device, n * d, 'bf16'), scores = zerosOn(device, n, 'f32');
    bench('score_chunks', 'g=4 d=128 n=16384 bf16', 20, () => device.scoreChunks(at(q), g, d, scale, at(L), n, at(scores)));
    [q, L, scores].forEach((x) => device.free(x));
  }
  { // sparse_attention
    const g = 4, n = 32768;
    const q = randBuf(device, g * d, 'f32'), K = randBuf(device, n * d, 'bf16'), V = randBuf(device, n * d, 'bf16'), out = zerosOn(device, g * d, 'f32');
    const segments = [{ k: at(K), v: at(V), n, ld: d }];
    bench('sparse_attention', 'g=4 d=128 n=32768 bf16 (1 segment)', 20, () => device.sparseAttention(at(q), g, d, scale, segments, at(out)));
    [q, K, V, out].forEach((x) => device.free(x));
  }
  { // rebuild_keys
    const rank = 160, ldsv = 1024, nc = 256, C = 8, totalChunks = 4096;
    const U = randBuf(device, totalChunks * C * rank, 'bf16'), SV = randBuf(device, rank * ldsv, 'bf16'), out = zerosOn(device, nc * C * d, 'bf16');
    const chunkIds = range(nc, (i) => i * (totalChunks / nc) + (i % 7));
    // The Device API always takes slots; identity slots write what the native call (slots = null) writes.
    const slots = range(nc, (i) => i);
    bench('rebuild_keys', 'rank=160 d=128 chunks=256 C=8 bf16', 20, () =>
      device.rebuildKeys({ u: at(U), rank, sv: at(SV), ldsv, d, chunkIds, slots, C, invFreq, style: 'half', out: at(out), ldo: d }));
    [U, SV, out].forEach((x) => device.free(x));
  }
  { // rope
    const rows = 2048;
    const x = randBuf(device, rows * d, 'f32');
    const positions = range(rows, (r) => 100000 + r);
    bench('rope', 'rows=2048 d=128', 20, () => device.rope(at(x), rows, d, d, positions, invFreq, 'half', 1));
    device.free(x);
  }
  device.dispose();
  return results;
}
