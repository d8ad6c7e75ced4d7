// Pre-RoPE keys with the structure of real ones (ShadowKV §3.1: pre-RoPE keys are low-rank).
import { randn } from './random.js';

/**
 * Keys drawn as a per-token code of `rank` numbers times a basis shared by the concatenated kv
 * heads, plus a per-channel mean and small noise. `sample(S)` draws more tokens from the same model,
 * so prompt and generated tokens share one low-rank structure.
 */
export class KeyModel {
  private readonly basis: Float64Array; // [rank, Hkv*d]
  private readonly mean: Float64Array; // [Hkv*d]

  constructor(
    readonly kvHeads: number,
    readonly headDim: number,
    readonly rank: number,
    private readonly rand: () => number,
    private readonly noise = 0.02,
  ) {
    this.basis = randn(rank * kvHeads * headDim, rand, 1 / Math.sqrt(rank));
    this.mean = randn(kvHeads * headDim, rand, 0.5);
  }

  /** Keys `[Hkv, S, d]` (head-major), into `out` when given. */
  sample<T extends Float32Array | Float64Array = Float64Array>(S: number, out?: T): T {
    const { kvHeads: Hkv, headDim: d, rank } = this;
    const D = Hkv * d;
    const o = (out ?? new Float64Array(Hkv * S * d)) as T;
    const code = randn(rank, this.rand);
    const row = new Float64Array(D);
    for (let t = 0; t < S; t++) {
      randn(rank, this.rand, 1, code);
      randn(D, this.rand, this.noise, row);
      for (let r = 0; r < rank; r++) {
        const c = code[r]!;
        const b = r * D;
        for (let j = 0; j < D; j++) row[j] += c * this.basis[b + j]!;
      }
      for (let h = 0; h < Hkv; h++) {
        const base = (h * S + t) * d;
        for (let j = 0; j < d; j++) o[base + j] = row[h * d + j]! + this.mean[h * d + j]!;
      }
    }
    return o;
  }
}
