/** Element types a tensor may hold. `f16` and `bf16` travel as raw bits in a `Uint16Array`. */
export type DType = 'f32' | 'f16' | 'bf16';

/** The typed array that carries a dtype's elements on the host. */
export type TensorData = Float32Array | Uint16Array;

/**
 * A dense row-major tensor on the host, `[batch, heads, tokens, headDim]` for every cache input.
 * @example
 * const q: Tensor = { data: new Float32Array(1 * 32 * 1 * 128), shape: [1, 32, 1, 128], dtype: 'f32' };
 */
export interface Tensor {
  readonly data: TensorData;
  readonly shape: readonly number[];
  readonly dtype: DType;
}

// NOTE: one function for every call, not a new closure each: every decode step counts its inputs' elements.
const times = (a: number, b: number) => a * b;

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  return shape.reduce(times, 1);
}

/** Creates a tensor, checking nothing; see the cache calls for validation. */
export function tensor(data: TensorData, shape: readonly number[], dtype: DType = data instanceof Float32Array ? 'f32' : 'bf16'): Tensor {
  return { data, shape: [...shape], dtype };
}
