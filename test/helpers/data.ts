// Seeded test data: random tensors, keys with the structure of real ones, and error metrics.
import { fromNumbers, toFloat32, type DType, type Tensor } from '../../packages/shadowkv/src/index.js';

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples (Box-Muller). */
export function randn(n: number, rand: () => number, scale = 1): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - rand()));
    const a = 2 * Math.PI * rand();
    out[i] = r * Math.cos(a) * scale;
    if (i + 1 < n) out[i + 1] = r * Math.sin(a) * scale;
  }
  return out;
}

/** A host tensor of `dtype` holding `values` (rounded), and the exact values it holds as float64. */
export function makeTensor(values: ArrayLike<number>, shape: number[], dtype: DType): { t: Tensor; f64: Float64Array } {
  const t: Tensor = { data: fromNumbers(values, dtype), shape, dtype };
  return { t, f64: Float64Array.from(toFloat32(t)) };
}

/** Random tensor `[...shape]` of dtype, N(0, scale²), with its float64 values. */
export function randomTensor(shape: number[], dtype: DType, rand: () => number, scale = 1) {
  return makeTensor(randn(shape.reduce((a, b) => a * b, 1), rand, scale), shape, dtype);
}

/**
 * Pre-RoPE keys with the structure of real ones: a per-token code of `rank` numbers times a basis
 * shared by the concatenated heads, plus a mean offset and small noise. `sample(S)` draws new
 * tokens from the same model (prompt and generated tokens alike).
 */
export class KeyModel {
  private readonly basis: Float64Array; // [rank, Hkv*d]
  private readonly mean: Float64Array; // [Hkv*d]

  constructor(
    readonly Hkv: number,
    readonly d: number,
    readonly rank: number,
    private readonly rand: () => number,
    private readonly noise = 0.02,
  ) {
    this.basis = randn(rank * Hkv * d, rand, 1 / Math.sqrt(rank));
    this.mean = randn(Hkv * d, rand, 0.5);
  }

  /** Keys `[Hkv, S, d]`. */
  sample(S: number): Float64Array {
    const { Hkv, d, rank } = this;
    const D = Hkv * d;
    const code = randn(S * rank, this.rand);
    const noise = randn(S * D, this.rand, this.noise);
    const out = new Float64Array(Hkv * S * d);
    for (let t = 0; t < S; t++) {
      for (let c = 0; c < D; c++) {
        let x = this.mean[c]! + noise[t * D + c]!;
        for (let r = 0; r < rank; r++) x += code[t * rank + r]! * this.basis[r * D + c]!;
        out[(Math.floor(c / d) * S + t) * d + (c % d)] = x;
      }
    }
    return out;
  }
}

/** Keys `[Hkv, S, d]` from a fresh `KeyModel`. */
export function lowRankKeys(Hkv: number, S: number, d: number, rank: number, rand: () => number, noise = 0.02): Float64Array {
  return new KeyModel(Hkv, d, rank, rand, noise).sample(S);
}

/** ||a - b|| / ||b||. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

/** Cosine similarity of two flat vectors. */
export function cosineSim(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! ** 2;
    bb += b[i]! ** 2;
  }
  return ab / Math.sqrt(aa * bb);
}

/** A tensor's values as float64. */
export const f64 = (t: Tensor) => Float64Array.from(toFloat32(t));
