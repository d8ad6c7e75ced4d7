import { fmt } from '../config.js';
import { DTypeError } from '../errors/DTypeError.js';
import type { ModelSpec, RopeStyle } from '../spec.js';
import type { DType } from '../tensor.js';
import type { LayerStep } from './LayerStep.js';

/** Element types of device buffers: the storage dtypes plus index and float64 tables. */
export type BufferDType = DType | 'i32' | 'f64';

/** Host array type of each buffer dtype. */
export type HostArray<T extends BufferDType = BufferDType> = T extends 'f32'
  ? Float32Array
  : T extends 'i32'
    ? Int32Array
    : T extends 'f64'
      ? Float64Array
      : Uint16Array;

/** Bytes per element of each buffer dtype. */
export const BUFFER_BYTES: Record<BufferDType, number> = { f32: 4, f16: 2, bf16: 2, i32: 4, f64: 8 };

/**
 * Bytes per element of `dtype`, checked: an unknown dtype is a `DTypeError` naming it and the known
 * ones (a lookup would size the buffer as NaN bytes). What a device's `alloc` and `wrap` size buffers with.
 */
export function bufferBytes(call: string, dtype: unknown): number {
  if (typeof dtype !== 'string' || !Object.hasOwn(BUFFER_BYTES, dtype)) {
    throw new DTypeError(`${call}: dtype ${fmt(dtype)} is not a buffer dtype; known: ${Object.keys(BUFFER_BYTES).map((d) => `'${d}'`).join(', ')}`);
  }
  return BUFFER_BYTES[dtype as BufferDType];
}

/**
 * Where a buffer lives: `'device'` (the accelerator, or the wasm heap standing in for it) or
 * `'host'` (offloaded values: pinned memory on CUDA; on wasm the same heap, counted apart).
 */
export type Tier = 'device' | 'host';

/** Memory a device holds for a cache: a plain handle the runtime resolves. */
export interface DeviceBuffer {
  readonly ptr: number;
  readonly length: number;
  readonly dtype: BufferDType;
  /** The memory-report component this buffer counts under. */
  readonly tag: string;
  readonly tier: Tier;
}

/** A position in a device buffer, counted in elements. */
export interface View {
  readonly buf: DeviceBuffer;
  readonly offset: number;
}

/** A view at an element offset. */
export const at = (buf: DeviceBuffer, offset = 0): View => ({ buf, offset });

/** One run of keys and values for attention: `n` rows of `d`, row stride `ld`. */
export interface Segment {
  readonly k: View;
  readonly v: View;
  readonly n: number;
  readonly ld: number;
}

/** `sparseAttention`'s `tasks`, checked: a positive integer (default 1). */
export function attentionTasks(tasks = 1): number {
  if (!Number.isInteger(tasks) || tasks < 1 || tasks > 0x7fffffff) throw new RangeError(`sparseAttention: tasks must be a positive integer, got ${tasks}`);
  return tasks;
}

/**
 * `keepLandmarks`' outlier lists, checked, as the one array the runtimes read: `heads` counts, then
 * `heads x maxOutliers` ids. Each head's `counts[h]` ids must ascend within `[0, nChunks)`, and its
 * `nChunks - counts[h]` landmarks fit `capacity`.
 */
export function outlierLists(heads: number, nChunks: number, outliers: Int32Array, counts: Int32Array, maxOutliers: number, capacity: number): Int32Array {
  const int = (x: number, lo: number) => Number.isInteger(x) && x >= lo && x <= 0x7fffffff;
  if (!int(heads, 0) || !int(nChunks, 0) || !int(maxOutliers, 0) || !int(capacity, 0)) throw new RangeError(`keepLandmarks: heads ${heads}, nChunks ${nChunks}, maxOutliers ${maxOutliers} and capacity ${capacity} must be non-negative integers`);
  if (counts.length < heads || outliers.length < heads * maxOutliers) throw new RangeError(`keepLandmarks: ${counts.length} counts and ${outliers.length} outlier ids for ${heads} heads of up to ${maxOutliers}`);
  for (let h = 0; h < heads; h++) {
    const n = counts[h]!;
    if (n < 0 || n > maxOutliers || n > nChunks) throw new RangeError(`keepLandmarks: head ${h} has ${n} outliers (at most ${Math.min(maxOutliers, nChunks)})`);
    if (nChunks - n > capacity) throw new RangeError(`keepLandmarks: head ${h} keeps ${nChunks - n} landmarks, past the capacity of ${capacity}`);
    for (let i = 0, last = -1; i < n; last = outliers[h * maxOutliers + i++]!) {
      const c = outliers[h * maxOutliers + i]!;
      if (!(c > last && c < nChunks)) throw new RangeError(`keepLandmarks: head ${h}'s outlier ${i} is chunk ${c}: the ids must ascend within [0, ${nChunks})`);
    }
  }
  const lists = new Int32Array(heads + heads * maxOutliers);
  lists.set(counts.subarray(0, heads));
  lists.set(outliers.subarray(0, heads * maxOutliers), heads);
  return lists;
}

/** What `Device.checkSpec` reads of a spec: the heads and their size. */
export type SpecHeads = Pick<ModelSpec, 'queryHeads' | 'kvHeads' | 'headDim'>;

/** `preRopeKeys`' arguments, checked: whole counts, d even, positions within int32, an f32 destination. */
export function preRopeArgs(dst: View, headStride: number, heads: number, rows: number, d: number, ld: number, first: number): void {
  const int = (x: number) => Number.isSafeInteger(x) && x >= 0;
  if (![headStride, heads, rows, d, ld, first].every(int)) throw new RangeError(`preRopeKeys: headStride ${headStride}, heads ${heads}, rows ${rows}, d ${d}, ld ${ld} and first ${first} must be non-negative integers`);
  if (d % 2 !== 0 || d === 0) throw new RangeError(`preRopeKeys: d must be even and positive (RoPE rotates pairs), got ${d}`);
  if (first + rows > 0x7fffffff) throw new RangeError(`preRopeKeys: positions up to ${first + rows} pass int32`);
  if (heads > 0 && rows > 0 && ld < heads * d) throw new RangeError(`preRopeKeys: ld ${ld} is less than heads x d = ${heads * d}`);
  if (dst.buf.dtype !== 'f32') throw new TypeError(`preRopeKeys: dst must be f32, got ${dst.buf.dtype}`);
}

/** `selectChunks`' `rows`, checked: a non-negative integer (default 1). */
export function selectRows(rows = 1): number {
  if (!Number.isInteger(rows) || rows < 0 || rows > 0x3fffffff) throw new RangeError(`selectChunks: rows must be a non-negative integer, got ${rows}`);
  return rows;
}

/** Bytes a device holds, per tier and per component tag. */
export interface DeviceMemory {
  device: number;
  host: number;
  /** Size of the wasm heap (address space reserved, including free blocks); absent on native devices. */
  wasmHeap?: number;
  components: Record<string, number>;
}

/**
 * Bytes a device can still allocate, per tier: what creation compares a cache's estimated needs
 * with (`estimateMemory`), so that a cache that cannot fit is refused before anything is allocated.
 */
export interface DeviceRoom {
  /** Device tier: CUDA's free device memory (other processes' use included), or what is left of the wasm heap. */
  device: number;
  /** Host tier: pinned memory the system can still lock, or (shared) the same pool as `device`. */
  host: number;
  /** Both tiers draw on one pool of `device` bytes (the wasm heap): their sum must fit it. */
  shared?: boolean;
  /** Where the numbers come from, for messages, e.g. `the 4 GiB wasm heap`. */
  source: string;
}

/** One range `findNonFinite` checks: `n` elements from `view`, each finite and of magnitude at most `limit`. */
export interface FiniteCheck {
  readonly view: View;
  readonly n: number;
  readonly limit: number;
}

/**
 * The fine-grained ops of one runtime instance, over its own buffers, and the fused layer step.
 * Ops are synchronous; `read` is the only call that returns device data to the host.
 */
export interface Device {
  readonly backend: string;
  /** The most both tiers together can hold (wasm: its 4 GiB heap); restores and preflights check against it. */
  readonly maxBytes?: number;
  /**
   * Devices with the same address space read each other's buffers (CUDA: `cuda:<ordinal>`, every
   * device of the process on that GPU). Absent: only the device itself (a wasm instance's own heap).
   */
  readonly addressSpace?: string;
  /**
   * The host tier is slow to allocate (CUDA: pinning, ~0.35 ms per MB): a cache with a declared
   * maxTokens then allocates its host pages at creation rather than when a row is compressed.
   */
  readonly pinsHost?: boolean;
  /** Optional: bytes it can still allocate per tier. Without it, creation checks against `maxBytes` (if set). */
  room?(): DeviceRoom;
  /**
   * Optional: throws a `ConfigError` naming the limit when this device cannot run a model of these
   * heads (CUDA: a kernel whose shared memory grows with them passes the most a block may have).
   * Cache creation asks before it allocates anything. Without it, every spec runs.
   */
  checkSpec?(spec: SpecHeads): void;
  /**
   * Optional: a buffer over memory the device did not allocate (CUDA: a device pointer of the host
   * loop's), of `length` elements. It is not counted or freed: `free` ignores it. Throws when the
   * address is not usable by this device.
   */
  wrap?(address: number, length: number, dtype: BufferDType): DeviceBuffer;
  /**
   * Optional: per check, the flat index of the first element that is NaN, infinite or of magnitude
   * above `limit`, else -1; all checks with one small read back. Without it, callers read the
   * ranges to the host and scan them there.
   */
  findNonFinite?(checks: readonly FiniteCheck[]): number[];
  /**
   * Optional: the same check of a host array of `dtype`'s elements, done natively (CUDA: C++ in the
   * addon, several times faster than the JS loop callers use without it; every decode step's inputs take it).
   */
  findNonFiniteHost?(data: HostArray, dtype: DType, limit: number): number;
  alloc<T extends BufferDType>(length: number, dtype: T, tag: string, tier?: Tier): DeviceBuffer;
  free(buf: DeviceBuffer): void;
  /** A buffer kept between calls for per-step temporaries; grows, never shrinks. */
  scratch(name: string, length: number, dtype: BufferDType): DeviceBuffer;
  /** A table of the buffers' addresses (the page table of a paged host tier); free it like any buffer. */
  pointerTable(bufs: readonly DeviceBuffer[], tag: string): DeviceBuffer;
  write(dst: View, data: HostArray): void;
  /** Device data to the host: a new array, or `into` (which must hold `length` elements) filled. */
  read<T extends BufferDType>(src: View & { buf: { dtype: T } }, length: number, into?: HostArray<T>): HostArray<T>;
  /** Same-dtype copy within or between buffers (overlap allowed). */
  copy(dst: View, src: View, length: number): void;
  /**
   * Optional: same-dtype copies (none overlapping its source) that run alongside the ops issued
   * after them, ordered after those issued before (CUDA: a second stream, so that the copy engines
   * work while kernels do). Returns `join`, after which every op waits for them; until it is called,
   * nothing may write the sources or touch the destinations. Without it, `copy` each.
   */
  copyAlongside?(copies: readonly { dst: View; src: View; length: number }[]): () => void;
  /** Dtype conversion between buffers (round to nearest even). */
  convert(dst: View, src: View, length: number): void;
  /** Strided conversion: `rows` rows of `cols` elements, row strides `dstLd` and `srcLd`. */
  convertRows(dst: View, dstLd: number, src: View, srcLd: number, rows: number, cols: number): void;

  gemm(a: GemmArgs): void;
  rope(x: View, rows: number, d: number, ld: number, positions: Int32Array, invFreq: DeviceBuffer, style: RopeStyle, direction: 1 | -1): void;
  /**
   * The pre-RoPE keys of `heads` heads: head h's `rows` rows of `d` (its dtype, row stride `d`) at
   * `src` + h * `headStride`, post-RoPE at positions `first`, `first + 1`, ..., to f32 columns
   * `[h * d, (h + 1) * d)` of `dst` (row stride `ld`) with RoPE undone: what `convertRows` then
   * `rope` (direction -1) a head at a time give, bit for bit.
   */
  preRopeKeys(dst: View, ld: number, src: View, headStride: number, heads: number, rows: number, d: number, invFreq: DeviceBuffer, style: RopeStyle, first: number): void;
  lowRankKeys(k: View, S: number, D: number, rank: number, oversample: number, powerIters: number, seed: number, out: LowRankOut): void;
  /**
   * Optional: `lowRankKeys`, the same bits, running alongside the ops issued after it (CUDA: a host
   * thread and a stream of its own, so that its host round trips leave the GPU to them), ordered
   * after those issued before. Returns `join`, which throws what `lowRankKeys` would throw, after
   * which every op waits for it; until then nothing may touch `k` or `out`, and no other
   * factorization may start. Without it, `lowRankKeys`.
   */
  lowRankKeysAlongside?(k: View, S: number, D: number, rank: number, oversample: number, powerIters: number, seed: number, out: LowRankOut): () => void;
  landmarks(keys: View, ld: number, nChunks: number, C: number, d: number, landmarks: View, minCos: View): void;
  /**
   * The landmark set of `heads` heads once their outliers are chosen: head h's landmarks are rows
   * `[h * nChunks, (h + 1) * nChunks)` of `landmarks` (f32, `d` each), its outliers the `counts[h]`
   * ascending chunk ids at `outliers[h * maxOutliers]`. Every other chunk c, in order, becomes
   * landmark j of the head: row `h * capacity + j` of `out` (its dtype) and `ids[h * capacity + j] = c`;
   * the ids past the head's landmarks, up to `capacity`, are 0.
   */
  keepLandmarks(landmarks: View, heads: number, nChunks: number, d: number, outliers: Int32Array, counts: Int32Array, maxOutliers: number, out: View, ids: View, capacity: number): void;
  /**
   * Each head's landmark bound, from scratch: the f32 bits of max |L_i| over head h's first
   * `headCounts[h * HEAD_FIELDS]` landmarks (its rows start at row `h * capacity` of `landmarks`) into the bound
   * word `headCounts[heads * HEAD_FIELDS + h]` (SparseHandles.headCounts). A backend whose step
   * scores landmarks where f32 overflow cannot show (CUDA's tensor cores) keeps it; the others have none.
   */
  landmarkBounds?(landmarks: View, heads: number, capacity: number, d: number, headCounts: View): void;
  /**
   * Top-k of `scores[n]` (largest: highest first), ties to the lower index, NaN last: the min(k, n)
   * chosen indices, ascending. With `rows`, each of `rows` rows of scores (row r at r * n) the same
   * way, row r's indices at r * min(k, n) of the result (on CUDA one wait for all rows).
   */
  selectChunks(scores: View, n: number, k: number, largest: boolean, rows?: number): Int32Array;
  scoreChunks(q: View, g: number, d: number, scale: number, landmarks: View, n: number, scores: View): void;
  rebuildKeys(a: RebuildArgs): void;
  /**
   * Copies chunks `chunkIds[i]` of head `h` from a paged tier into `dst` slots `slots[i]` (`pages.dtype`,
   * `pages.block` elements each), dequantizing where the tier holds fp8 (`pages.fp8Rows`) and
   * unpacking where it is packed (`pages.bases`).
   */
  gatherValues(dst: View, pages: PagedBuffer, h: number, chunkIds: Int32Array, slots: Int32Array): void;
  /**
   * Optional, and with it an fp8 host tier (`gatherValues` and `decodeLayer` read `fp8Rows` pages):
   * `chunks` chunks of `C` rows of `d` values (`src`'s dtype, contiguous) into fp8 chunks at `dst`
   * (4-byte words, `fp8ChunkBytes(C, d)` bytes a chunk): E4M3 codes with a power-of-two scale per row.
   */
  quantizeValues?(dst: View, src: View, chunks: number, C: number, d: number): void;
  /**
   * Optional, and with it a packed host tier (`gatherValues` and `decodeLayer` read `bases` pages):
   * `chunks` chunks of `n` bf16 values (`src`, contiguous) into their `n`-value slots at `dst`, each
   * packed where its exponents allow (runtime/wasm/pack.h: lossless, 3/4 of the bytes), its base
   * to byte `first + i` of `bases`.
   */
  packValues?(dst: View, src: View, chunks: number, n: number, bases: DeviceBuffer, first: number): void;
  /**
   * Exact attention of `g` query heads (`q`, `out`: `[g, d]` f32) over the union of `segments`.
   * `tasks` (default 1): how many such calls the caller's layer step makes, one per (row, kv head);
   * a runtime that splits keys over parallel blocks splits them as for that many, which is how
   * `decodeLayer` does it, so the two give the same bits.
   */
  sparseAttention(q: View, g: number, d: number, scale: number, segments: readonly Segment[], out: View, tasks?: number): void;
  causalAttention(q: View, g: number, Sq: number, d: number, scale: number, offset: number, k: View, v: View, out: View): void;

  /**
   * Decode steps 1-5 of a whole layer (every row and kv head) in one runtime call. Optional: without
   * it, caches compose the ops above (`decodeLayerComposed`, the reference this must match).
   */
  decodeLayer?(step: LayerStep): void;
  /**
   * Optional, with `decodeLayer`: host-array inputs come to it as `step.hostInputs` instead of
   * written to the device first, so the runtime can send them up with the step record (CUDA: one
   * copy, made while the previous step's kernels run).
   */
  readonly uploadsStepInputs?: boolean;
  /**
   * Optional, with `decodeLayer`: a 'host'-tier buffer of `length` elements that the fused step's
   * kernels write its output into, for a `read` before the caller's call returns (valid until the
   * next `hostOutput`), where that output goes to a host array. It belongs to the device, not to
   * `memory()` (CUDA: one pinned, mapped block per process, written over PCIe, read back with a
   * wait and a memcpy: no copy queued behind the step's kernels).
   */
  hostOutput?(length: number, dtype: BufferDType): DeviceBuffer;
  /**
   * Optional, with `uploadsStepInputs`: a decode step's host-array inputs checked (each against its
   * `limits` entry, as `findNonFiniteHost`; none where `limits` is undefined) and staged for the
   * next `decodeLayer` given the same arrays, in one pass before the policy's work on the step (so
   * a bad input still changes nothing). -1, or the flat index over q | k | v of the first element
   * that fails (nothing staged then).
   */
  stageStepInputs?(inputs: readonly [HostArray, HostArray, HostArray], dtype: DType, limits: readonly [number, number, number] | undefined): number;

  /** Allocations made so far: buffers, and those the runtime makes for itself (instrumentation). */
  allocations(): number;
  memory(): DeviceMemory;
  /** Frees the runtime instance and everything in it; the device is unusable afterwards. */
  dispose(): void;
}

/**
 * A growable tier of fixed-size pages (`pageChunks` chunks of every head each), so that growth
 * never copies what is stored. Page `p * heads + h` holds chunks `[p * pageChunks, (p + 1) * pageChunks)`
 * of head h; `table` holds the pages' addresses for native code.
 */
export interface PagedBuffer {
  readonly pageChunks: number;
  /** Elements of one chunk as the gather delivers it (`dtype`). */
  readonly block: number;
  readonly heads: number;
  /** The dtype chunks are gathered into: the pages' own, unless they hold fp8. */
  readonly dtype: BufferDType;
  /** C where the pages hold fp8 chunks of C rows (4-byte words, `fp8ChunkBytes(C, block / C)` bytes a chunk). */
  readonly fp8Rows?: number;
  pages: DeviceBuffer[];
  table: DeviceBuffer;
  /**
   * Where the pages hold packed bf16 chunks (runtime/wasm/pack.h, in their `block`-value slots):
   * one base byte a chunk, in page order (`packIndex`), on the device beside `table`.
   */
  bases?: DeviceBuffer;
}

/** The byte of `bases` that holds chunk c of head h's base: page order, `pageChunks` bytes a page (pack.h's pack_index). */
export const packIndex = (p: Pick<PagedBuffer, 'pageChunks' | 'heads'>, h: number, c: number): number =>
  (Math.floor(c / p.pageChunks) * p.heads + h) * p.pageChunks + (c % p.pageChunks);

/** Bytes of one fp8 chunk of C rows of d values: the codes, one scale exponent per row, 16-byte padded (runtime/wasm/fp8.h). */
export const fp8ChunkBytes = (C: number, d: number): number => Math.ceil((C * d + C) / 16) * 16;

/** `c = alpha * op(a) * op(b) + beta * c`; `aRows` gathers rows of a (when not transposed). */
export interface GemmArgs {
  M: number;
  N: number;
  K: number;
  alpha?: number;
  a: View;
  lda: number;
  transA?: boolean;
  aRows?: View;
  b: View;
  ldb: number;
  transB?: boolean;
  beta?: number;
  c: View;
  ldc: number;
}

/** Outputs of `lowRankKeys` (all f32): U [S x rank], SV [rank x D], proj [D x rank], sigma [rank]. */
export interface LowRankOut {
  u: View;
  sv: View;
  proj: View;
  sigma: View;
}

/** Arguments of `rebuildKeys`: rows `slot*C + t` of `out` = RoPE(U[chunk*C + t] · SVh). */
export interface RebuildArgs {
  u: View;
  rank: number;
  /** SV at the head's first column; row stride `ldsv`. */
  sv: View;
  ldsv: number;
  d: number;
  chunkIds: Int32Array;
  slots: Int32Array;
  C: number;
  invFreq: DeviceBuffer;
  style: RopeStyle;
  out: View;
  ldo: number;
}

