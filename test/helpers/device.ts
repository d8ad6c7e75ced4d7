// Moving test data in and out of a backend's device buffers.
import { at, fromNumbers, toFloat32, type BufferDType, type Device, type DeviceBuffer, type DType } from '../../packages/shadowkv/src/backend.js';

/** Uploads numbers as a new device buffer of `dtype` (rounded to it). */
export function put(device: Device, values: ArrayLike<number>, dtype: BufferDType): DeviceBuffer {
  const buf = device.alloc(values.length, dtype, 'test');
  const host =
    dtype === 'i32' ? Int32Array.from(values) : dtype === 'f64' ? Float64Array.from(values) : fromNumbers(values, dtype as DType);
  device.write(at(buf), host);
  return buf;
}

/** A new zeroed device buffer. */
export function zerosOn(device: Device, n: number, dtype: BufferDType): DeviceBuffer {
  return put(device, new Float64Array(n), dtype);
}

/** Reads a device buffer (any storage dtype) as float64. */
export function get(device: Device, buf: DeviceBuffer, n = buf.length, offset = 0): Float64Array {
  const raw = device.read({ buf, offset } as never, n) as Float32Array | Uint16Array;
  if (buf.dtype === 'i32' || buf.dtype === 'f64' || buf.dtype === 'f32') return Float64Array.from(raw as Float32Array);
  return Float64Array.from(toFloat32({ data: raw, shape: [n], dtype: buf.dtype }));
}

/** Rounds numbers to a dtype and back, the values a buffer of that dtype holds. */
export function rounded(values: ArrayLike<number>, dtype: DType): Float64Array {
  return Float64Array.from(toFloat32({ data: fromNumbers(values, dtype), shape: [values.length], dtype }));
}

/** Rows `[n, d]` of a flat array. */
export function rows(x: ArrayLike<number>, n: number, d: number, ld = d, offset = 0): Float64Array[] {
  return Array.from({ length: n }, (_, i) => Float64Array.from({ length: d }, (_, j) => x[offset + i * ld + j]!));
}
