// Codes and host array types every native runtime shares. NOTE: the enums must match
// runtime/wasm/abi.h and runtime/cuda/status.h.
import { fmt } from '../config.js';
import { DTypeError } from '../errors/DTypeError.js';
import type { BufferDType, HostArray } from './Device.js';

/** Storage dtype codes (`skv_dtype`). */
export const DTYPE_CODE = { f32: 0, f16: 1, bf16: 2 } as const;
/** RoPE pairing codes (`skv_rope_style`). */
export const ROPE_STYLE_CODE = { half: 0, interleaved: 1 } as const;
/** Status codes of the ops that can fail (`skv_status`). */
export const STATUS = { ok: 0, alloc: 1, arg: 2 } as const;

/** The host typed array of each buffer dtype. */
export const HOST_ARRAY: Record<BufferDType, { new (length: number): HostArray; new (buffer: ArrayBuffer, byteOffset: number, length: number): HostArray }> = {
  f32: Float32Array,
  f16: Uint16Array,
  bf16: Uint16Array,
  i32: Int32Array,
  f64: Float64Array,
};

/** The storage dtype code of a buffer dtype; a `DTypeError` for any other (index and float64 tables have none). */
export function storageCode(dtype: BufferDType): number {
  // NOTE: own keys only: a missing code would reach the runtime as undefined, which reads as f32's 0.
  if (!Object.hasOwn(DTYPE_CODE, dtype)) throw new DTypeError(`${fmt(dtype)} has no storage dtype code; the runtimes store ${Object.keys(DTYPE_CODE).map((d) => `'${d}'`).join(', ')}`);
  return DTYPE_CODE[dtype as keyof typeof DTYPE_CODE];
}
