// Seeded test data: random tensors, keys with the structure of real ones, and error metrics.
import { fromNumbers, toFloat32, type DType, type Tensor } from '../../packages/shadowkv/src/backend.js';
import { KeyModel } from '../../examples/workloads/KeyModel.js';
import { randn } from '../../examples/workloads/random.js';

export { randn, rng } from '../../examples/workloads/random.js';
export { KeyModel } from '../../examples/workloads/KeyModel.js';

/** A host tensor of `dtype` holding `values` (rounded), and the exact values it holds as float64. */
export function makeTensor(values: ArrayLike<number>, shape: number[], dtype: DType): { t: Tensor; f64: Float64Array } {
  const t: Tensor = { data: fromNumbers(values, dtype), shape, dtype };
  return { t, f64: Float64Array.from(toFloat32(t)) };
}

/** Random tensor `[...shape]` of dtype, N(0, scale²), with its float64 values. */
export function randomTensor(shape: number[], dtype: DType, rand: () => number, scale = 1) {
  return makeTensor(randn(shape.reduce((a, b) => a * b, 1), rand, scale), shape, dtype);
}

/** Keys `[Hkv, S, d]` from a fresh `KeyModel`. */
export function lowRankKeys(Hkv: number, S: number, d: number, rank: number, rand: () => number, noise = 0.02): Float64Array {
  return new KeyModel(Hkv, d, rank, rand, noise).sample(S);
}

export { cosine as cosineSim, relError } from '../../examples/workloads/metrics.js';

/** A tensor's values as float64. */
export const f64 = (t: Tensor) => Float64Array.from(toFloat32(t));
