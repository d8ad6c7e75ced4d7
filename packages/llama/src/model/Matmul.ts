import type { Tensor } from '../../../shadowkv/src/tensor.js';

/** A weight a `Matmul` has taken in (converted, or copied into a wasm heap): `[rows (out), cols (in)]`. */
export interface MatmulWeight {
  readonly rows: number;
  readonly cols: number;
}

/**
 * The projections' matrix product, `out[m, n] = Σ_k x[m, k] · W[n, k]` (x f32 `[M, K]`, W `[N, K]` as
 * `nn.Linear` stores it). Weights are taken in once by `prepare`; the loop calls `linear` per layer.
 */
export interface Matmul extends Disposable {
  /** e.g. `'js-f32'`, `'wasm-simd'`. */
  readonly name: string;
  prepare(weight: Tensor): MatmulWeight;
  linear(x: Float32Array, rows: number, weight: MatmulWeight, out: Float32Array): void;
  /** Frees what `prepare` took (a wasm heap); later calls are undefined. */
  dispose(): void;
}
