// The safetensors container (huggingface/safetensors, format.md): an 8-byte little-endian header
// length, a JSON header naming each tensor's dtype, shape and byte range, then the raw bytes.
import type { DType, Tensor } from '../../../shadowkv/src/tensor.js';
import { CheckpointError } from '../errors/CheckpointError.js';

/** Bytes per element of every dtype tag the format defines; only the float ones below load as weights. */
const TAG_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, I64: 8, U64: 8, F64: 8,
};
const WEIGHT_DTYPES: Record<string, DType> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };
const TAGS: Record<DType, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

// A header larger than this is not a header (the format's own reader caps it at 100 MB).
const MAX_HEADER_BYTES = 100_000_000;

/** One tensor as its file stores it: the dtype tag, shape and bytes (a view into the file). */
export interface RawTensor {
  name: string;
  tag: string;
  shape: number[];
  bytes: Uint8Array;
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** Parses a safetensors file; `file` names it in errors. Every byte range is checked against the file. */
export function readSafetensors(bytes: Uint8Array, file: string): Map<string, RawTensor> {
  if (bytes.length < 8) throw new CheckpointError('truncated', `${file}: ${bytes.length} bytes, shorter than the 8-byte header length`);
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (headerLength > MAX_HEADER_BYTES) throw new CheckpointError('header', `${file}: header length ${headerLength} is not plausible (at most ${MAX_HEADER_BYTES}); not a safetensors file?`);
  if (8 + headerLength > bytes.length) throw new CheckpointError('truncated', `${file}: the header needs ${8 + headerLength} bytes, the file has ${bytes.length}`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLength)));
  } catch (err) {
    throw new CheckpointError('header', `${file}: the header is not UTF-8 JSON (${(err as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw new CheckpointError('header', `${file}: the header is not a JSON object`);
  const data = bytes.subarray(8 + headerLength);
  const tensors = new Map<string, RawTensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets: offsets } = (entry ?? {}) as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const size = typeof dtype === 'string' ? TAG_BYTES[dtype] : undefined;
    if (size === undefined) throw new CheckpointError('header', `${file}: tensor '${name}' has dtype ${JSON.stringify(dtype)}, not a safetensors dtype`);
    if (!Array.isArray(shape) || !shape.every(isCount)) throw new CheckpointError('header', `${file}: tensor '${name}' has shape ${JSON.stringify(shape)}, expected a list of counts`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0]! > offsets[1]!) {
      throw new CheckpointError('header', `${file}: tensor '${name}' has data_offsets ${JSON.stringify(offsets)}, expected [begin, end] with begin <= end`);
    }
    const [begin, end] = offsets as [number, number];
    const want = shape.reduce((a: number, b: number) => a * b, 1) * size;
    if (end - begin !== want) throw new CheckpointError('header', `${file}: tensor '${name}' (${dtype} ${JSON.stringify(shape)}) needs ${want} bytes, its data_offsets span ${end - begin}`);
    if (end > data.length) throw new CheckpointError('truncated', `${file}: tensor '${name}' ends at byte ${end} of the data, which has ${data.length}; the file is cut short`);
    tensors.set(name, { name, tag: dtype as string, shape: shape as number[], bytes: data.subarray(begin, end) });
  }
  return tensors;
}

/** A stored tensor as a host `Tensor` (f32, f16 or bf16; copied only when its bytes are misaligned). */
export function weightTensor(raw: RawTensor, file: string): Tensor {
  const dtype = WEIGHT_DTYPES[raw.tag];
  if (!dtype) throw new CheckpointError('dtype', `${file}: tensor '${raw.name}' is ${raw.tag}; weights must be F32, F16 or BF16`);
  const width = dtype === 'f32' ? 4 : 2;
  const aligned = raw.bytes.byteOffset % width === 0 ? raw.bytes : raw.bytes.slice();
  const n = aligned.length / width;
  const data = dtype === 'f32' ? new Float32Array(aligned.buffer, aligned.byteOffset, n) : new Uint16Array(aligned.buffer, aligned.byteOffset, n);
  return { data, shape: raw.shape, dtype };
}

/** Serializes tensors as one safetensors file (header padded to 8 bytes, tensors in the given order). */
export function encodeSafetensors(tensors: ReadonlyMap<string, Tensor>, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const [name, t] of tensors) {
    const bytes = t.data.byteLength;
    header[name] = { dtype: TAGS[t.dtype], shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = JSON.stringify(header);
  const unpadded = new TextEncoder().encode(json).length;
  // The format pads the header with spaces so that the data starts 8-byte aligned.
  const head = new TextEncoder().encode(json + ' '.repeat((8 - (unpadded % 8)) % 8));
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const t of tensors.values()) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    at += t.data.byteLength;
  }
  return out;
}
