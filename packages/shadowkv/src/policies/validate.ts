import { dataMatches } from '../dtype.js';
import { DTypeError } from '../errors/DTypeError.js';
import { LayerIndexError } from '../errors/LayerIndexError.js';
import { NonFiniteError } from '../errors/NonFiniteError.js';
import { SequenceIndexError } from '../errors/SequenceIndexError.js';
import { ShapeError } from '../errors/ShapeError.js';
import { numel, type DType, type Tensor, type TensorData } from '../tensor.js';

const show = (shape: readonly unknown[]) => `[${shape.join(', ')}]`;

/** Throws `LayerIndexError` unless `layer` is an integer in `[0, layers)`. */
export function checkLayer(call: string, layer: number, layers: number): void {
  if (!Number.isInteger(layer) || layer < 0 || layer >= layers) {
    throw new LayerIndexError(`${call}: layer ${String(layer)} is outside [0, ${layers})`);
  }
}

/** Throws `SequenceIndexError` unless `seq` is an integer in `[0, batch)`. */
export function checkSequence(call: string, seq: number, batch: number): void {
  if (!Number.isInteger(seq) || seq < 0 || seq >= batch) {
    throw new SequenceIndexError(`${call}: sequence ${String(seq)} is outside [0, ${batch})`);
  }
}

/**
 * Checks a tensor's dtype, data type and shape against `expected` (`-1` = any positive size),
 * and that every element is finite. `why` explains the expectation in the message.
 */
export function checkTensor(call: string, name: string, t: Tensor | undefined, expected: readonly number[], why: string): void {
  if (!t || typeof t !== 'object' || !t.shape || !t.data) throw new ShapeError(`${call}: ${name} is missing (expected a Tensor ${show(expected)})`);
  if (!['f32', 'f16', 'bf16'].includes(t.dtype)) throw new DTypeError(`${call}: ${name}.dtype is '${String(t.dtype)}', expected 'f32', 'f16' or 'bf16'`);
  if (!dataMatches(t.data, t.dtype)) {
    const want = t.dtype === 'f32' ? 'Float32Array' : 'Uint16Array';
    throw new DTypeError(`${call}: ${name} has dtype '${t.dtype}' but its data is a ${t.data.constructor.name}, expected ${want}`);
  }
  const ok = t.shape.length === expected.length && t.shape.every((s, i) => Number.isInteger(s) && s > 0 && (expected[i] === -1 || s === expected[i]));
  if (!ok) {
    const want = show(expected.map((e) => (e === -1 ? '*' : e)));
    throw new ShapeError(`${call}: ${name} is ${show(t.shape)}, but ${why}, so expected ${want}`);
  }
  if (t.data.length !== numel(t.shape)) {
    throw new ShapeError(`${call}: ${name} has shape ${show(t.shape)} (${numel(t.shape)} elements) but ${t.data.length} elements of data`);
  }
  checkFinite(call, name, t);
}

/** Throws `NonFiniteError` naming the first NaN/Infinity element. */
export function checkFinite(call: string, name: string, t: Tensor): void {
  const d = t.data;
  if (t.dtype === 'f32') {
    for (let i = 0; i < d.length; i++) {
      if (!Number.isFinite(d[i]!)) throw new NonFiniteError(`${call}: ${name}[${i}] is ${d[i]} (flat index); inputs must be finite`);
    }
    return;
  }
  // 16-bit: exponent all ones is Inf/NaN (f16: 0x7c00, bf16: 0x7f80).
  const mask = t.dtype === 'f16' ? 0x7c00 : 0x7f80;
  for (let i = 0; i < d.length; i++) {
    if ((d[i]! & mask) === mask) throw new NonFiniteError(`${call}: ${name}[${i}] is not finite (flat index); inputs must be finite`);
  }
}

/** Same dtype for every input of one call, so one conversion path serves them. */
export function checkSameDtype(call: string, tensors: Record<string, Tensor | undefined>): void {
  const entries = Object.entries(tensors).filter(([, t]) => t) as [string, Tensor][];
  const [first, ...rest] = entries;
  for (const [name, t] of rest) {
    if (t.dtype !== first![1].dtype) throw new DTypeError(`${call}: ${name} is '${t.dtype}' but ${first![0]} is '${first![1].dtype}'; pass one dtype per call`);
  }
}

/** Resolves and checks the `sequences` of a prefill: distinct rows in range, one per input row. */
export function checkSequences(call: string, sequences: readonly number[] | undefined, rows: number, batch: number): number[] {
  const seqs = sequences ? [...sequences] : Array.from({ length: rows }, (_, i) => i);
  if (!Array.isArray(seqs)) throw new SequenceIndexError(`${call}: sequences must be an array of row indices`);
  if (seqs.length !== rows) throw new ShapeError(`${call}: ${seqs.length} sequences given for ${rows} input rows`);
  seqs.forEach((s) => checkSequence(call, s, batch));
  if (new Set(seqs).size !== seqs.length) throw new SequenceIndexError(`${call}: sequences ${show(seqs)} repeat a row`);
  return seqs;
}

/** Checks a caller's output array: the host array type of `dtype`, exactly `n` elements. */
export function checkOut(call: string, out: TensorData, dtype: DType, n: number): void {
  if (!(out instanceof Float32Array || out instanceof Uint16Array) || !dataMatches(out, dtype)) {
    const want = dtype === 'f32' ? 'Float32Array' : 'Uint16Array';
    throw new DTypeError(`${call}: out must be a ${want} for '${dtype}' inputs, got ${(out as object)?.constructor?.name ?? String(out)}`);
  }
  if (out.length !== n) throw new ShapeError(`${call}: out holds ${out.length} elements, expected ${n} (rows x queryHeads x headDim)`);
}
