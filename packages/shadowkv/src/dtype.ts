import { DTypeError } from './errors/DTypeError.js';
import type { DType, Tensor, TensorData } from './tensor.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Bytes per element of a storage dtype. */
export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, bf16: 2 };

/** Rounds an f32 to bf16 bits (nearest even; NaN stays NaN). */
export function f32ToBf16(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x40; // quiet NaN
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Widens bf16 bits to a number. */
export function bf16ToF32(h: number): number {
  u32[0] = h << 16;
  return f32[0]!;
}

/** Rounds an f32 to IEEE half bits (nearest even, subnormals, overflow to Infinity). */
export function f32ToF16(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rounded = mant + half - 1 + ((mant >>> shift) & 1);
    return sign | (rounded >>> shift);
  }
  const rounded = mant + 0xfff + ((mant >>> 13) & 1);
  if (rounded & 0x800000) {
    mant = 0;
    e += 1;
    if (e >= 0x1f) return sign | 0x7c00;
  } else {
    mant = rounded;
  }
  return sign | (e << 10) | ((mant >>> 13) & 0x3ff);
}

/** Widens IEEE half bits to a number. */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Reads a tensor's elements as f32, whatever its dtype. Throws `DTypeError` for an unknown dtype, or data of another dtype's array type. */
export function toFloat32(t: Tensor): Float32Array {
  knownDtype('toFloat32', t?.dtype);
  if (!dataMatches(t.data, t.dtype)) throw new DTypeError(`toFloat32: a '${t.dtype}' tensor holds its elements in a ${hostKind(t.dtype)}, got ${t.data?.constructor?.name ?? typeof t.data}`);
  if (t.dtype === 'f32') return t.data as Float32Array;
  const widen = t.dtype === 'bf16' ? bf16ToF32 : f16ToF32;
  return Float32Array.from(t.data as Uint16Array, widen);
}

/**
 * Converts numbers to a dtype's host array, each rounded to f32 first, then (16-bit dtypes) to
 * nearest even: as a model's f32 activations are narrowed. Throws `DTypeError` for an unknown dtype.
 */
export function fromNumbers(values: ArrayLike<number>, dtype: DType): TensorData {
  knownDtype('fromNumbers', dtype);
  if (dtype === 'f32') return Float32Array.from(values);
  const narrow = dtype === 'bf16' ? f32ToBf16 : f32ToF16;
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = narrow(values[i]!);
  return out;
}

/** Throws `DTypeError` naming `call`, the dtype and the storage dtypes unless `dtype` is one of them. */
export function knownDtype(call: string, dtype: unknown): asserts dtype is DType {
  if (dtype !== 'f32' && dtype !== 'f16' && dtype !== 'bf16') throw new DTypeError(`${call}: dtype must be 'f32', 'f16' or 'bf16', got ${typeof dtype === 'string' ? `'${dtype}'` : String(dtype)}`);
}

/** A zeroed host array of `n` elements of `dtype`. */
export function hostArray(dtype: DType, n: number): TensorData {
  return dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n);
}

// The built-in getters of typed arrays, which read an array's internal slots: a subclass may redefine
// `length`, `byteOffset` or its species, and an array made in another realm (a `vm` context, an iframe,
// jsdom) is a typed array that fails `instanceof Float32Array` here.
const TYPED_PROTO = Object.getPrototypeOf(Uint8Array.prototype) as object;
const slot = (key: PropertyKey) => Object.getOwnPropertyDescriptor(TYPED_PROTO, key)!.get!;
const typedTag = slot(Symbol.toStringTag), typedBuffer = slot('buffer'), typedOffset = slot('byteOffset'), typedLength = slot('length');

/** Elements a typed array really holds (0 once its buffer is detached). */
export function elements(data: ArrayBufferView): number {
  return typedLength.call(data) as number;
}

/**
 * Whether `buffer` was detached: transferred away (postMessage or structuredClone with `transfer`,
 * `ArrayBuffer.prototype.transfer`). Such a buffer cannot be viewed, which is how engines without
 * `ArrayBuffer.prototype.detached` (Node 20) tell it from an empty one.
 */
export function isDetached(buffer: ArrayBufferLike): boolean {
  if (buffer.byteLength !== 0) return false;
  try {
    new Uint8Array(buffer, 0, 0);
    return false;
  } catch {
    return true;
  }
}

/** What to say of a detached array, after its name. */
export const DETACHED = "its ArrayBuffer is detached: it was transferred (postMessage or structuredClone with `transfer`) and now belongs to the receiver. Transfer a copy (array.slice()) to keep using the array here";

/** `' (…detached…)'` when a typed array's buffer is detached, else `''`: the reason an array holds no elements. */
export function detachedNote(data: ArrayBufferView): string {
  return typedKind(data) !== undefined && isDetached(typedBuffer.call(data) as ArrayBufferLike) ? ` (${DETACHED})` : '';
}

/**
 * The kind of typed array `v` is (`'Float32Array'`, `'Uint16Array'`, ...), read from its internal slot:
 * a subclass counts as its base, another realm's array as this realm's kind. Undefined for anything else.
 */
export function typedKind(v: unknown): string | undefined {
  return typeof v === 'object' && v !== null ? (typedTag.call(v) as string | undefined) : undefined;
}

type HostConstructor = Float32ArrayConstructor | Uint16ArrayConstructor | Uint8ArrayConstructor;

/**
 * A typed array of `Ctor`'s kind (`typedKind`) as this realm's own `Ctor` over the same memory, so
 * that whatever reads it later (checks, staging copies, `subarray`) goes by its real slots, not by
 * a subclass's `length`, `byteOffset` or species. A plain array of this realm is returned as it is.
 */
export function ownView<C extends HostConstructor>(data: ArrayBufferView, Ctor: C): InstanceType<C> {
  if (Object.getPrototypeOf(data) === Ctor.prototype) return data as InstanceType<C>;
  const n = elements(data);
  // NOTE: a detached (or shrunk out of bounds) buffer cannot be viewed again; it holds no elements either way.
  return (n === 0 ? new Ctor(0) : new Ctor(typedBuffer.call(data) as ArrayBuffer, typedOffset.call(data) as number, n)) as InstanceType<C>;
}

/** The kind of host array that holds a `dtype` tensor's elements. */
export function hostKind(dtype: DType): 'Float32Array' | 'Uint16Array' {
  return dtype === 'f32' ? 'Float32Array' : 'Uint16Array';
}

/** True when `data` is the host array type of `dtype`, by its internal slot (`typedKind`): a subclass or another realm's array counts. */
export function dataMatches(data: unknown, dtype: DType): boolean {
  return typedKind(data) === hostKind(dtype);
}
