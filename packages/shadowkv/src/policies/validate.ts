import type { Device } from '../backends/Device.js';
import { checkKeys, fmt } from '../config.js';
import { DeviceTensor } from '../DeviceTensor.js';
import { bf16ToF32, dataMatches, detachedNote, DTYPE_BYTES, elements, f16ToF32, hostKind, ownView, typedKind } from '../dtype.js';
import { DeviceMismatchError } from '../errors/DeviceMismatchError.js';
import { DTypeError } from '../errors/DTypeError.js';
import { LayerIndexError } from '../errors/LayerIndexError.js';
import { NonFiniteError } from '../errors/NonFiniteError.js';
import { SequenceIndexError } from '../errors/SequenceIndexError.js';
import { ShapeError } from '../errors/ShapeError.js';
import { numel, type DType, type Tensor, type TensorData } from '../tensor.js';

/** A cache input: a host tensor, or a device tensor of the cache's device. */
export type Input = Tensor | DeviceTensor;

/** Whether an input lives on the device. */
export const onDevice = (t: Input): t is DeviceTensor => t instanceof DeviceTensor;

// NOTE: the checks of calls and of options format values alike (config.ts); callers import it from either.
export { fmt };

const show = (shape: readonly unknown[]) => `[${shape.map(fmt).join(', ')}]`;

/** Throws `LayerIndexError` unless `layer` is an integer in `[0, layers)`. */
export function checkLayer(call: string, layer: unknown, layers: number): asserts layer is number {
  if (!Number.isInteger(layer) || (layer as number) < 0 || (layer as number) >= layers) {
    throw new LayerIndexError(`${call}: layer ${fmt(layer)} is outside [0, ${layers})`);
  }
}

/** Throws `SequenceIndexError` unless `seq` is an integer in `[0, batch)`. */
export function checkSequence(call: string, seq: unknown, batch: number): asserts seq is number {
  if (!Number.isInteger(seq) || (seq as number) < 0 || (seq as number) >= batch) {
    throw new SequenceIndexError(`${call}: sequence ${fmt(seq)} is outside [0, ${batch})`);
  }
}

/**
 * Reads the named fields of a call's input object once each, so that what is validated is what
 * is used (a getter cannot hand back something else later). A getter that throws is a `ShapeError`.
 */
export function capture<K extends string>(call: string, what: string, o: unknown, keys: readonly K[], exact = false): Partial<Record<K, unknown>> {
  if (o === undefined) return {};
  if (o === null || typeof o !== 'object') throw new ShapeError(`${call}: ${what} must be an object, got ${fmt(o)}`);
  // exact: a call's own argument, where a misspelt key (sequence, Out) would silently change what the call does.
  if (exact) checkKeys(`${call}: ${what}`, o, keys);
  const out: Partial<Record<K, unknown>> = {};
  for (const k of keys) {
    try {
      out[k] = (o as Record<K, unknown>)[k];
    } catch (err) {
      throw new ShapeError(`${call}: reading ${what}.${k} threw (${fmt((err as Error)?.message)})`);
    }
  }
  return out;
}

/**
 * A tensor argument read once into a plain tensor: its data (a real typed array, not a proxy or a
 * plain array), a copy of its shape and its dtype. Shapes and dtypes are checked by `checkTensor`.
 */
export function captureTensor(call: string, name: string, t: unknown, expected: readonly number[]): Tensor {
  if (t === undefined || t === null) throw new ShapeError(`${call}: ${name} is missing (expected a Tensor ${show(expected)})`);
  refuseTensorCopy(call, name, t);
  const { data, shape, dtype } = capture(call, name, t, ['data', 'shape', 'dtype'] as const);
  if (!Array.isArray(shape)) throw new ShapeError(`${call}: ${name}.shape must be an array of sizes, got ${fmt(shape)}`);
  if (dtype !== 'f32' && dtype !== 'f16' && dtype !== 'bf16') throw new DTypeError(`${call}: ${name}.dtype is '${fmt(dtype)}', expected 'f32', 'f16' or 'bf16'`);
  // By the internal slot, not instanceof: another realm's Float32Array (a vm context, jsdom) is one too.
  const kind = typedKind(data);
  if (kind !== 'Float32Array' && kind !== 'Uint16Array') {
    throw new DTypeError(`${call}: ${name}.data must be a Float32Array (f32) or Uint16Array (f16, bf16), got ${kind ?? fmt(data)}`);
  }
  // NOTE: before ownView, which makes a detached foreign array an empty one of this realm (no longer detached).
  const detached = detachedNote(data as ArrayBufferView);
  if (detached) throw new ShapeError(`${call}: ${name}.data holds no elements${detached}`);
  // A subclass or a foreign array is taken as a plain view of the same memory: the staging copies read
  // `length`, `byteOffset` and `subarray`, which a subclass may redefine (silently wrong rows, or a RangeError).
  return { data: ownView(data as ArrayBufferView, kind === 'Float32Array' ? Float32Array : Uint16Array), shape: Array.from(shape as unknown[]) as number[], dtype };
}

/**
 * A tensor argument that may be a device tensor: one of `device` (or its address space), not
 * disposed, taken as it is (its shape and dtype are the tensor's own); otherwise `captureTensor`.
 */
export function captureInput(call: string, name: string, t: unknown, expected: readonly number[], device: Device): Input {
  if (t instanceof DeviceTensor) {
    t.viewFor(device, call, name);
    return t;
  }
  return captureTensor(call, name, t, expected);
}

/**
 * Refuses what a DeviceTensor becomes when copied (postMessage or structuredClone to a worker, a
 * spread): its public fields without its memory, which would otherwise read as a host tensor with no data.
 */
function refuseTensorCopy(call: string, name: string, t: unknown): void {
  if (typeof t !== 'object' || t === null || t instanceof DeviceTensor || ArrayBuffer.isView(t)) return;
  if ('backend' in t && 'owner' in t && !('data' in t)) {
    throw new DeviceMismatchError(`${call}: ${name} is a copy of a DeviceTensor (postMessage or structuredClone to another thread, or a spread), which carries none of its memory; a device tensor works only with the cache that made it, on its thread. Send ${name}.read() and pass a host Tensor`);
  }
}

/**
 * Checks a captured tensor's data type and shape against `expected` (`-1` = any positive size).
 * `why` explains the expectation; it is called only to word an error (a decode step checks three tensors).
 */
export function checkTensor(call: string, name: string, t: Input, expected: readonly number[], why: () => string): void {
  if (!onDevice(t) && !dataMatches(t.data, t.dtype)) {
    throw new DTypeError(`${call}: ${name} has dtype '${t.dtype}' but its data is a ${t.data.constructor.name}, expected ${hostKind(t.dtype)}`);
  }
  if (!shapeMatches(t.shape, expected)) {
    const want = show(expected.map((e) => (e === -1 ? '*' : e)));
    throw new ShapeError(`${call}: ${name} is ${show(t.shape)}, but ${why()}, so expected ${want}`);
  }
  if (!onDevice(t) && elements(t.data) !== numel(t.shape)) {
    throw new ShapeError(`${call}: ${name} has shape ${show(t.shape)} (${numel(t.shape)} elements) but ${elements(t.data)} elements of data`);
  }
}

/** Whether every size of `shape` is a positive safe integer equal to `expected`'s (`-1`: any). Captured shapes have no holes. */
function shapeMatches(shape: readonly number[], expected: readonly number[]): boolean {
  if (shape.length !== expected.length) return false;
  for (let i = 0; i < shape.length; i++) {
    const s = shape[i]!;
    if (!(Number.isSafeInteger(s) && s > 0 && (expected[i] === -1 || s === expected[i]))) return false;
  }
  return true;
}

/**
 * The host arrays' sizes again, once every getter of the call has run: a getter read after a
 * tensor's check could shrink its resizable buffer or detach it (a transfer), and the step would then
 * stage stale bytes, or store them.
 */
export function recheckSizes(call: string, inputs: Record<string, Input | undefined>, out?: { data: unknown; n: number }): void {
  for (const name in inputs) {
    const t = inputs[name]; // NOTE: for-in, not Object.entries: every decode step rechecks its inputs
    if (t && !onDevice(t) && elements(t.data) !== numel(t.shape)) {
      throw new ShapeError(`${call}: ${name} holds ${elements(t.data)} elements after the call's getters ran, not the ${numel(t.shape)} of its shape ${show(t.shape)} (its buffer was resized or detached)${detachedNote(t.data)}`);
    }
  }
  if (out && ArrayBuffer.isView(out.data) && elements(out.data) !== out.n) {
    throw new ShapeError(`${call}: out holds ${elements(out.data)} elements after the call's getters ran, not ${out.n} (its buffer was resized or detached)${detachedNote(out.data)}`);
  }
}

/** An element of each dtype's host array as a number (16-bit floats are raw bits); made once, not per check. */
const WIDEN: Record<DType, (x: number) => number> = { f32: (x) => x, f16: f16ToF32, bf16: bf16ToF32 };

/** The largest finite magnitude of each dtype. */
export const MAX_FINITE: Record<DType, number> = { f32: 3.4028234663852886e38, f16: 65504, bf16: 3.3895313892515355e38 };

/**
 * Throws `NonFiniteError` naming the first element that is NaN or infinite, or that would not fit
 * the cache's storage dtype. Keys are stored after RoPE, which can rotate a pair's magnitude
 * into one element, so they must stay within `1/sqrt(2)` of the largest finite value.
 */
export function checkValues(call: string, name: string, t: Tensor, storage: DType | undefined, role: ValueRole, device?: Pick<Device, 'findNonFiniteHost'>): void {
  const limit = checkLimit(t.dtype, storage, role);
  const i = device?.findNonFiniteHost ? device.findNonFiniteHost(t.data, t.dtype, limit)
    : t.dtype === 'f32' ? firstOutsideF32(t.data as Float32Array, limit)
    : firstOutside16(t.data as Uint16Array, t.dtype === 'f16' ? 0x7c00 : 0x7f80, limit < MAX_FINITE[t.dtype] ? limit : Infinity, WIDEN[t.dtype]);
  if (i >= 0) badValue(call, name, t, i, storage, role);
}

/** The bound `checkValues` holds an input of `dtype` to (its largest finite value at most). */
export function checkLimit(dtype: DType, storage: DType | undefined, role: ValueRole): number {
  return Math.min(valueLimit(storage, role), MAX_FINITE[dtype]);
}

/** Throws the `NonFiniteError` of element `i` of input `name`, which a check found outside its bound. */
export function badValue(call: string, name: string, t: Tensor, i: number, storage: DType | undefined, role: ValueRole): never {
  nonFinite(call, name, i, WIDEN[t.dtype](t.data[i]!), t.dtype, storage, role);
}

// The scans return an index, as the native one (`findNonFiniteHost`) does, so both share the error path.
/** Index of the first element that is NaN, infinite or beyond ±bound (-1: none). */
function firstOutsideF32(d: Float32Array, bound: number): number {
  for (let i = 0; i < d.length; i++) if (!(Math.abs(d[i]!) <= bound)) return i; // NaN fails the comparison
  return -1;
}

/** The same over 16-bit floats: exponent all ones (`mask`) is Inf/NaN; the range needs a decode only when it binds. */
function firstOutside16(d: Uint16Array, mask: number, bound: number, widen: (bits: number) => number): number {
  for (let i = 0; i < d.length; i++) if ((d[i]! & mask) === mask) return i;
  if (bound === Infinity) return -1;
  for (let i = 0; i < d.length; i++) if (!(Math.abs(widen(d[i]!)) <= bound)) return i;
  return -1;
}

/** What an input is to the cache: keys must stay finite after RoPE as stored, values as stored, other inputs (queries) after RoPE in f32. */
export type ValueRole = 'key' | 'value' | 'input';

/**
 * The largest magnitude an input may hold for `storage` (undefined: not stored). Queries are not
 * stored, but RoPE rotates them in f32 (where a pair of 3e38 becomes Infinity), so they keep the
 * keys' `1/sqrt(2)` margin below f32's largest value.
 */
export function valueLimit(storage: DType | undefined, role: ValueRole): number {
  if (role === 'input') return MAX_FINITE.f32 / Math.SQRT2;
  return storage ? MAX_FINITE[storage] / (role === 'key' ? Math.SQRT2 : 1) : Infinity;
}

/** Throws the `NonFiniteError` of element `i` (value `v`) of input `name`. */
export function nonFinite(call: string, name: string, i: number, v: number, dtype: DType, storage: DType | undefined, role: ValueRole): never {
  const limit = valueLimit(storage, role);
  const why = limit >= MAX_FINITE[dtype] ? ''
    : role === 'input' ? (Number.isFinite(v) ? ` and within ±${limit.toPrecision(6)} to stay finite after RoPE, which rotates queries in f32` : '')
    : storage ? ` and within ±${limit.toPrecision(6)} to fit '${storage}' storage${role === 'key' ? ' after RoPE' : ''}` : '';
  throw new NonFiniteError(`${call}: ${name}[${i}] is ${v} (flat index); inputs must be finite${why}`);
}

/**
 * `checkValues` for device tensors: on the device where it can (`findNonFinite`, one small read
 * back, i.e. one wait for the GPU, for all of them), else on a host copy of each.
 */
export function checkDeviceValues(call: string, device: Device, items: { name: string; t: DeviceTensor; storage: DType | undefined; role: ValueRole }[]): void {
  if (!items.length) return;
  const views = items.map(({ name, t }) => t.viewFor(device, call, name));
  if (!device.findNonFinite) {
    items.forEach(({ name, t, storage, role }) => checkValues(call, name, { data: t.read(), shape: t.shape, dtype: t.dtype }, storage, role));
    return;
  }
  const first = device.findNonFinite(items.map(({ t, storage, role }, i) => ({ view: views[i]!, n: t.size, limit: Math.min(valueLimit(storage, role), MAX_FINITE[t.dtype]) })));
  items.forEach(({ name, t, storage, role }, i) => {
    const at = first[i]!;
    if (at < 0) return;
    const bits = device.read({ buf: views[i]!.buf, offset: views[i]!.offset + at } as never, 1) as TensorData;
    const v = WIDEN[t.dtype](bits[0]!);
    nonFinite(call, name, at, v, t.dtype, storage, role);
  });
}

/** Same dtype for every input of one call, so one conversion path serves them. */
export function checkSameDtype(call: string, tensors: Record<string, Input | undefined>): void {
  let first: string | undefined;
  for (const name in tensors) {
    const t = tensors[name];
    if (!t) continue;
    if (first === undefined) first = name;
    else if (t.dtype !== tensors[first]!.dtype) throw new DTypeError(`${call}: ${name} is '${t.dtype}' but ${first} is '${tensors[first]!.dtype}'; pass one dtype per call`);
  }
}

/** Resolves and checks the `sequences` of a call: distinct rows in range, one per input row. */
export function checkSequences(call: string, sequences: unknown, rows: number, batch: number): readonly number[] {
  if (sequences !== undefined && !Array.isArray(sequences)) throw new SequenceIndexError(`${call}: sequences must be an array of row indices, got ${fmt(sequences)}`);
  if (sequences === undefined && rows <= batch) return allRows(rows); // 0..rows-1: distinct, in range
  // Lengths first: a sparse array of 2^32 - 1 would otherwise be copied (seconds, gigabytes) to be refused.
  if (sequences !== undefined && (sequences as unknown[]).length > batch) {
    throw new SequenceIndexError(`${call}: sequences names ${(sequences as unknown[]).length} rows; the cache holds ${batch}`);
  }
  const seqs: unknown[] = sequences ? Array.from(sequences as unknown[]) : Array.from({ length: rows }, (_, i) => i);
  if (seqs.length !== rows) throw new ShapeError(`${call}: ${seqs.length} sequences given for ${rows} input rows`);
  seqs.forEach((s) => checkSequence(call, s, batch));
  if (new Set(seqs).size !== seqs.length) throw new SequenceIndexError(`${call}: sequences ${show(seqs)} repeat a row`);
  return seqs as number[];
}

// 0..n-1, made once per n (a decode without `sequences` takes them every step).
const rowLists: (readonly number[])[] = [];
const allRows = (n: number) => (rowLists[n] ??= Object.freeze(Array.from({ length: n }, (_, i) => i)));

/** Whether two live device tensors share memory (both checked to be of one address space). */
export function overlaps(a: DeviceTensor, b: DeviceTensor): boolean {
  return a.address < b.address + b.size * DTYPE_BYTES[b.dtype] && b.address < a.address + a.size * DTYPE_BYTES[a.dtype];
}

/**
 * Checks a caller's output: a host array of `dtype`'s type, or a device tensor of `device` of
 * dtype `dtype`, of exactly `n` elements that overlap none of `inputs`.
 */
export function checkOut(call: string, out: unknown, dtype: DType, n: number, device: Device, inputs: Record<string, Input>): asserts out is TensorData | DeviceTensor {
  if (out instanceof DeviceTensor) {
    out.viewFor(device, call, 'out');
    if (out.dtype !== dtype) throw new DTypeError(`${call}: out is a '${out.dtype}' device tensor, but the inputs are '${dtype}'`);
    if (out.size !== n) throw new ShapeError(`${call}: out holds ${out.size} elements, expected ${n} (rows x queryHeads x headDim)`);
    for (const name in inputs) {
      const t = inputs[name]!;
      if (onDevice(t) && overlaps(t, out)) throw new ShapeError(`${call}: out overlaps ${name} (the same device memory); the step reads ${name} while writing out`);
    }
    return;
  }
  refuseTensorCopy(call, 'out', out);
  // By the internal slot (as captureTensor): another realm's Float32Array is one. The output is copied
  // into the caller's array itself (set() goes by its slots), which is what decode returns.
  if (!dataMatches(out, dtype)) throw new DTypeError(`${call}: out must be a ${hostKind(dtype)} for '${dtype}' inputs, got ${typedKind(out) ?? fmt(out)}`);
  if (elements(out as TensorData) !== n) throw new ShapeError(`${call}: out holds ${elements(out as TensorData)} elements, expected ${n} (rows x queryHeads x headDim)${detachedNote(out as TensorData)}`);
}

/** An optional list argument copied into a plain array (undefined stays undefined). */
export function checkList(call: string, name: string, list: unknown, max: number): unknown[] | undefined {
  if (list === undefined) return undefined;
  if (!Array.isArray(list)) throw new SequenceIndexError(`${call}: ${name} must be an array, got ${fmt(list)}`);
  if (list.length > max) throw new SequenceIndexError(`${call}: ${name} names ${list.length} entries, more than the ${max} there are`);
  return Array.from(list as unknown[]);
}
