// Low-rank pre-RoPE keys from an exact truncated SVD (docs/algorithm.md "Compression", step 1).
import { matmul, svd, zeros, type Matrix } from './linalg.js';

/** Below this fraction of sigma_1 a direction counts as absent: its 1/sigma in proj is 0. */
export const SIGMA_CUTOFF = 1e-6;

export interface LowRankKeys {
  /** r' = min(rank, nc, Hkv*d). */
  rank: number;
  U: Matrix; // [nc, r']
  SV: Matrix; // [r', Hkv*d] = Σ Vᵀ
  proj: Matrix; // [Hkv*d, r'] = V Σ⁻¹ (cut off)
  sigma: Float64Array; // all min(nc, Hkv*d) singular values, descending
}

/** Truncated SVD `K ≈ U Σ Vᵀ` of the heads-concatenated pre-RoPE keys K [nc, Hkv*d]. */
export function lowRankKeys(K: Matrix, rank: number): LowRankKeys {
  const r = Math.min(rank, K.rows, K.cols);
  const full = svd(K);
  const sigma1 = full.sigma[0] ?? 0;
  const U = zeros(K.rows, r);
  const SV = zeros(r, K.cols);
  const proj = zeros(K.cols, r);
  for (let i = 0; i < r; i++) {
    const s = full.sigma[i];
    const inv = s > SIGMA_CUTOFF * sigma1 ? 1 / s : 0;
    for (let t = 0; t < K.rows; t++) U.data[t * r + i] = full.U.data[t * full.U.cols + i];
    for (let c = 0; c < K.cols; c++) {
      const v = full.V.data[c * full.V.cols + i];
      SV.data[i * K.cols + c] = s * v;
      proj.data[c * r + i] = v * inv;
    }
  }
  return { rank: r, U, SV, proj, sigma: full.sigma };
}

/** Compaction: coordinates of new pre-RoPE keys K [m, Hkv*d] in the first compression's basis, `K · proj`. */
export function projectKeys(K: Matrix, proj: Matrix): Matrix {
  return matmul(K, proj);
}
