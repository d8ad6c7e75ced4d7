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

/**
 * A file read by byte ranges: its size and positioned reads. `loadCheckpoint` reads files this way, the
 * header first and then each tensor it needs, so a shard of any size loads (a whole file in one
 * buffer stops at 2 GiB in Node).
 */
export interface ByteSource {
  readonly size: number;
  /** `length` bytes from byte `offset` (the range lies within `size`). */
  read(offset: number, length: number): Uint8Array;
}

/** One tensor as its file stores it: the dtype tag, shape, and its bytes, read when asked for. */
export interface RawTensor {
  name: string;
  tag: string;
  shape: number[];
  /** Its bytes: a view when the file is in memory, else read from the file now. */
  bytes(): Uint8Array;
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** A checked header entry: where its bytes lie in the data region. */
interface Entry {
  name: string;
  tag: string;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Parses a safetensors file (its bytes, or a `ByteSource` that reads ranges of it); `file` names it in
 * errors. Only the header is read here; each tensor's bytes are read by its `bytes()`.
 */
export function readSafetensors(source: Uint8Array | ByteSource, file: string): Map<string, RawTensor> {
  const src = source instanceof Uint8Array ? inMemory(source) : source;
  if (src.size < 8) throw new CheckpointError('truncated', `${file}: ${src.size} bytes, shorter than the 8-byte header length`);
  const prefix = src.read(0, 8);
  const headerLength = Number(new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true));
  if (headerLength > MAX_HEADER_BYTES) throw new CheckpointError('header', `${file}: header length ${headerLength} is not plausible (at most ${MAX_HEADER_BYTES}); not a safetensors file?`);
  if (8 + headerLength > src.size) throw new CheckpointError('truncated', `${file}: the header needs ${8 + headerLength} bytes, the file has ${src.size}`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(src.read(8, headerLength)));
  } catch (err) {
    throw new CheckpointError('header', `${file}: the header is not UTF-8 JSON (${(err as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw new CheckpointError('header', `${file}: the header is not a JSON object`);
  const dataStart = 8 + headerLength;
  const entries = Object.entries(header).filter(([name]) => name !== '__metadata__').map(([name, entry]) => readEntry(name, entry, src.size - dataStart, file));
  checkTiling(entries, src.size - dataStart, file);
  return new Map(entries.map(({ name, tag, shape, begin, end }) => [name, { name, tag, shape, bytes: () => src.read(dataStart + begin, end - begin) }]));
}

const inMemory = (bytes: Uint8Array): ByteSource => ({ size: bytes.length, read: (offset, length) => bytes.subarray(offset, offset + length) });

/** One tensor's header entry, checked: a dtype tag, a shape, and data_offsets spanning dtype x shape within the data. */
function readEntry(name: string, entry: unknown, dataLength: number, file: string): Entry {
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
  if (end > dataLength) throw new CheckpointError('truncated', `${file}: tensor '${name}' ends at byte ${end} of the data, which has ${dataLength}; the file is cut short`);
  return { name, tag: dtype as string, shape: shape as number[], begin, end };
}

/**
 * The byte ranges, in order, must tile the data: each begins where the one before ends and the last
 * ends at the file's end, as the format's own reader requires (huggingface/safetensors
 * `Metadata::validate`). So no two tensors share bytes, and no bytes are unaccounted for.
 */
function checkTiling(entries: Entry[], dataLength: number, file: string): void {
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  let previous: string | undefined;
  let hole: string | undefined; // reported only where no bytes overlap: shared bytes are the worse news
  for (const { name, begin, end } of sorted) {
    const after = previous === undefined ? 'the data begins at 0' : `'${previous}' ends at ${at}`;
    if (begin < at) throw new CheckpointError('header', `${file}: tensor '${name}' begins at byte ${begin} of the data, but ${after}: their bytes overlap; safetensors tensors tile the data`);
    if (begin > at) hole ??= `${file}: tensor '${name}' begins at byte ${begin} of the data, but ${after}: the bytes between belong to no tensor; safetensors tensors tile the data`;
    at = end;
    previous = name;
  }
  if (hole) throw new CheckpointError('header', hole);
  if (at !== dataLength) throw new CheckpointError('header', `${file}: ${dataLength - at} bytes follow the last tensor's end (byte ${at} of the data); safetensors tensors tile the data to the end of the file`);
}

/** A stored tensor as a host `Tensor` (f32, f16 or bf16; copied only when its bytes are misaligned). */
export function weightTensor(raw: RawTensor, file: string): Tensor {
  const dtype = WEIGHT_DTYPES[raw.tag];
  if (!dtype) throw new CheckpointError('dtype', `${file}: tensor '${raw.name}' is ${raw.tag}; weights must be F32, F16 or BF16`);
  const width = dtype === 'f32' ? 4 : 2;
  const bytes = raw.bytes();
  const aligned = bytes.byteOffset % width === 0 ? bytes : bytes.slice();
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
