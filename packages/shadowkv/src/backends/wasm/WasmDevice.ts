import { DisposedError } from '../../errors/DisposedError.js';
import { OutOfMemoryError } from '../../errors/OutOfMemoryError.js';
import { WasmTrapError } from '../../errors/WasmTrapError.js';
import { WASM_HEAP_BYTES } from '../../estimateMemory.js';
import type { RopeStyle } from '../../spec.js';
import {
  BUFFER_BYTES,
  attentionTasks,
  bufferBytes,
  outlierLists,
  selectRows,
  preRopeArgs,
  type BufferDType,
  type Device,
  type DeviceBuffer,
  type DeviceMemory,
  type GemmArgs,
  type HostArray,
  type LowRankOut,
  type PagedBuffer,
  type RebuildArgs,
  type Segment,
  type Tier,
  type View,
} from '../Device.js';
import type { LayerStep, StepRow } from '../LayerStep.js';
import { HOST_ARRAY, storageCode } from '../codes.js';
import { MemoryLedger } from '../MemoryLedger.js';
import { throwLowRankStatus, throwStepStatus } from '../statusErrors.js';
import { DTYPE_CODE, ROPE_STYLE_CODE, ROW_WORDS, SEGMENT_BYTES, STATUS, STEP_WORDS, type WasmExports } from './abi.js';


/**
 * One instance of the wasm runtime with its own heap (up to 4 GB): the "device" of a cache on the
 * wasm backend. Both tiers live in that heap; `memory()` counts them apart.
 */
export class WasmDevice implements Device {
  readonly backend = 'wasm';
  readonly maxBytes = WASM_HEAP_BYTES;
  private readonly ledger = new MemoryLedger();
  /** The layer-step record, encoded here and written in one piece (grown with the batch). */
  private stepWords = new Int32Array(STEP_WORDS);
  private stepFloats = new Float32Array(this.stepWords.buffer);
  private instance: WasmExports | undefined;
  /**
   * The shadow-stack pointer every call from JS starts at. NOTE: read once: each call that returns
   * restores it and the runtime never calls back into itself, so it is the same before every call.
   */
  private readonly stackTop: number | undefined;

  constructor(exports: WasmExports) {
    this.instance = exports;
    this.stackTop = exports.stackSave?.();
  }

  private get x(): WasmExports {
    if (!this.instance) throw new DisposedError('wasm device: the runtime instance was disposed');
    return this.instance;
  }

  /**
   * Runs a runtime call. A trap skipped the C++ destructors, so the stack pointer and the scratch
   * arena are put back first: the device stays usable (what the call wrote before trapping is not
   * undone). The runtime says whether the trap was an allocation the heap could not give (an
   * OutOfMemoryError naming the op: usable again once memory is freed) or anything else, such as an
   * out-of-bounds access (a WasmTrapError naming the op and the trap: a bug, never a full heap).
   */
  private op<T>(name: string, call: () => T): T {
    try {
      return call();
    } catch (err) {
      if (!(err instanceof WebAssembly.RuntimeError)) throw err;
      const x = this.x;
      if (this.stackTop !== undefined) x.stackRestore?.(this.stackTop);
      if (x.skv_scratch_reset() === STATUS.alloc) {
        throw new OutOfMemoryError(`${name}: the wasm runtime trapped (${err.message}) on an allocation its heap could not give; the heap is ${x.memory.buffer.byteLength} bytes of 4 GB. Use a smaller batch or context, or the cuda backend`);
      }
      throw new WasmTrapError(`${name}: the wasm runtime trapped (${err.message}), not for lack of memory: a bug in shadowkv, or views passed to the op that lie outside their buffers. What the op wrote before the trap stays: dispose this cache`);
    }
  }

  /** Byte address of a view. */
  private addr(v: View): number {
    return v.buf.ptr + v.offset * BUFFER_BYTES[v.buf.dtype];
  }

  private bytes(): Uint8Array {
    // NOTE: memory.buffer is replaced when the heap grows, so views are made per use.
    return new Uint8Array(this.x.memory.buffer);
  }

  alloc<T extends BufferDType>(length: number, dtype: T, tag: string, tier: Tier = 'device'): DeviceBuffer {
    const bytes = Math.max(length, 1) * bufferBytes(`WasmDevice.alloc (${tag})`, dtype);
    // NOTE: skv_malloc takes a wasm32 size_t; a size of 4 GB or more would wrap, not fail.
    const ptr = bytes < 2 ** 32 ? this.x.skv_malloc(bytes) >>> 0 : 0;
    if (ptr === 0) {
      throw new OutOfMemoryError(
        `wasm heap: could not allocate ${bytes} bytes for ${tag} (heap is ${this.x.memory.buffer.byteLength} bytes of 4 GB); use a smaller batch or context, or the cuda backend`,
      );
    }
    const buf = { ptr, length, dtype, tag, tier };
    this.ledger.count(buf, 1);
    return buf;
  }

  free(buf: DeviceBuffer): void {
    if (!this.instance) return; // the whole heap went with dispose()
    this.ledger.count(buf, -1);
    this.x.skv_free(buf.ptr);
  }

  scratch(name: string, length: number, dtype: BufferDType): DeviceBuffer {
    return this.ledger.scratch(this, name, length, dtype);
  }

  pointerTable(bufs: readonly DeviceBuffer[], tag: string): DeviceBuffer {
    const table = this.alloc(bufs.length, 'i32', tag);
    this.write({ buf: table, offset: 0 }, Int32Array.from(bufs, (b) => b.ptr));
    return table;
  }

  /** Uploads an index or table array into a named scratch buffer; returns its address. */
  private stage(name: string, data: Int32Array | Float32Array): number {
    const buf = this.scratch(name, data.length, data instanceof Int32Array ? 'i32' : 'f32');
    this.write({ buf, offset: 0 }, data);
    return buf.ptr;
  }

  write(dst: View, data: HostArray): void {
    this.bytes().set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), this.addr(dst));
  }

  read<T extends BufferDType>(src: View & { buf: { dtype: T } }, length: number, into?: HostArray<T>): HostArray<T> {
    const Ctor = HOST_ARRAY[src.buf.dtype];
    const view = new Ctor(this.x.memory.buffer, this.addr(src), length) as HostArray<T>;
    if (!into) return view.slice() as HostArray<T>;
    (into as Float32Array).set(view as Float32Array);
    return into;
  }

  copy(dst: View, src: View, length: number): void {
    const n = length * BUFFER_BYTES[src.buf.dtype];
    this.bytes().copyWithin(this.addr(dst), this.addr(src), this.addr(src) + n);
  }

  convert(dst: View, src: View, length: number): void {
    if (dst.buf.dtype === src.buf.dtype) return this.copy(dst, src, length);
    this.op('convert', () => this.x.skv_convert(this.addr(src), storageCode(src.buf.dtype), this.addr(dst), storageCode(dst.buf.dtype), length));
  }

  convertRows(dst: View, dstLd: number, src: View, srcLd: number, rows: number, cols: number): void {
    this.op('convert_rows', () => this.x.skv_convert_rows(this.addr(src), storageCode(src.buf.dtype), srcLd, this.addr(dst), storageCode(dst.buf.dtype), dstLd, rows, cols));
  }

  gemm(g: GemmArgs): void {
    const rows = g.aRows ? this.addr(g.aRows) : 0;
    this.op('gemm', () => this.x.skv_gemm(
      g.M, g.N, g.K, g.alpha ?? 1,
      this.addr(g.a), storageCode(g.a.buf.dtype), g.lda, g.transA ? 1 : 0, rows,
      this.addr(g.b), storageCode(g.b.buf.dtype), g.ldb, g.transB ? 1 : 0,
      g.beta ?? 0, this.addr(g.c), g.ldc,
    ));
  }

  rope(x: View, rows: number, d: number, ld: number, positions: Int32Array, invFreq: DeviceBuffer, style: RopeStyle, direction: 1 | -1): void {
    const pos = this.stage('rope.positions', positions);
    this.op('rope', () => this.x.skv_rope(this.addr(x), rows, d, ld, pos, invFreq.ptr, ROPE_STYLE_CODE[style], direction));
  }

  preRopeKeys(dst: View, ld: number, src: View, headStride: number, heads: number, rows: number, d: number, invFreq: DeviceBuffer, style: RopeStyle, first: number): void {
    preRopeArgs(dst, headStride, heads, rows, d, ld, first);
    this.op('pre_rope_keys', () => this.x.skv_pre_rope_keys(this.addr(src), storageCode(src.buf.dtype), headStride, heads, rows, d, this.addr(dst), ld, invFreq.ptr, ROPE_STYLE_CODE[style], first));
  }

  lowRankKeys(k: View, S: number, D: number, rank: number, oversample: number, powerIters: number, seed: number, o: LowRankOut): void {
    const status = this.op('low_rank_keys', () => this.x.skv_low_rank_keys(
      this.addr(k), S, D, rank, oversample, powerIters, seed >>> 0,
      this.addr(o.u), this.addr(o.sv), this.addr(o.proj), this.addr(o.sigma),
    ));
    throwLowRankStatus(status, { S, D, rank, oversample, powerIters }, 'the wasm heap (at most 4 GB)');
  }

  landmarks(keys: View, ld: number, nChunks: number, C: number, d: number, landmarks: View, minCos: View): void {
    this.op('landmarks', () => this.x.skv_landmarks(this.addr(keys), storageCode(keys.buf.dtype), ld, nChunks, C, d, this.addr(landmarks), this.addr(minCos)));
  }

  selectChunks(scores: View, n: number, k: number, largest: boolean, rows?: number): Int32Array {
    const r = selectRows(rows);
    const m = Math.max(0, Math.min(k, n));
    const out = this.scratch('select.out', Math.max(r * m, 1), 'i32');
    for (let i = 0; i < r; i++) {
      const row = { buf: scores.buf, offset: scores.offset + i * n };
      this.op('select_chunks', () => this.x.skv_select_chunks(this.addr(row), n, k, largest ? 1 : 0, out.ptr + 4 * i * m));
    }
    return this.read({ buf: out, offset: 0 }, r * m) as Int32Array;
  }

  keepLandmarks(landmarks: View, heads: number, nChunks: number, d: number, outliers: Int32Array, counts: Int32Array, maxOutliers: number, out: View, ids: View, capacity: number): void {
    const checked = outlierLists(heads, nChunks, outliers, counts, maxOutliers, capacity);
    if (heads === 0 || capacity === 0) return;
    const lists = this.stage('keep.lists', checked);
    this.op('keep_landmarks', () => this.x.skv_keep_landmarks(this.addr(landmarks), heads, nChunks, d, lists + 4 * heads, lists, maxOutliers, this.addr(out), storageCode(out.buf.dtype), this.addr(ids), capacity));
  }

  scoreChunks(q: View, g: number, d: number, scale: number, landmarks: View, n: number, scores: View): void {
    const work = this.scratch('score.work', g * n, 'f32');
    this.op('score_chunks', () => this.x.skv_score_chunks(this.addr(q), g, d, scale, this.addr(landmarks), storageCode(landmarks.buf.dtype), n, this.addr(scores), work.ptr));
  }

  rebuildKeys(r: RebuildArgs): void {
    const ids = this.stage('rebuild.ids', r.chunkIds);
    const slots = this.stage('rebuild.slots', r.slots);
    this.op('rebuild_keys', () => this.x.skv_rebuild_keys(
      this.addr(r.u), storageCode(r.u.buf.dtype), r.rank, this.addr(r.sv), storageCode(r.sv.buf.dtype), r.ldsv, r.d,
      ids, slots, r.chunkIds.length, r.C, r.invFreq.ptr, ROPE_STYLE_CODE[r.style],
      this.addr(r.out), storageCode(r.out.buf.dtype), r.ldo,
    ));
  }

  gatherValues(dst: View, pages: PagedBuffer, h: number, chunkIds: Int32Array, slots: Int32Array): void {
    const ids = this.stage('gather.ids', chunkIds);
    const to = this.stage('gather.slots', slots);
    this.op('gather_values', () => this.x.skv_gather_values(pages.table.ptr, pages.pageChunks, pages.heads, h, ids, to, chunkIds.length, pages.block, storageCode(pages.dtype), pages.fp8Rows ?? 0, pages.bases?.ptr ?? 0, this.addr(dst)));
  }

  quantizeValues(dst: View, src: View, chunks: number, C: number, d: number): void {
    this.op('quantize_values', () => this.x.skv_quantize_values(this.addr(src), storageCode(src.buf.dtype), chunks, C, d, this.addr(dst)));
  }

  packValues(dst: View, src: View, chunks: number, n: number, bases: DeviceBuffer, first: number): void {
    this.op('pack_values', () => this.x.skv_pack_values(this.addr(src), chunks, n, this.addr(dst), bases.ptr + first));
  }

  sparseAttention(q: View, g: number, d: number, scale: number, segments: readonly Segment[], out: View, tasks?: number): void {
    attentionTasks(tasks); // checked only: the wasm runtime attends a task's keys in one pass
    const table = new Int32Array((segments.length * SEGMENT_BYTES) / 4);
    segments.forEach((s, i) => table.set([this.addr(s.k), this.addr(s.v), s.n, s.ld], i * 4));
    const segs = this.stage('attention.segments', table);
    const kvDtype = segments.length ? storageCode(segments[0]!.k.buf.dtype) : DTYPE_CODE.f32;
    this.op('sparse_attention', () => this.x.skv_sparse_attention(this.addr(q), g, d, scale, segs, segments.length, kvDtype, this.addr(out)));
  }

  causalAttention(q: View, g: number, Sq: number, d: number, scale: number, offset: number, k: View, v: View, out: View): void {
    this.op('causal_attention', () => this.x.skv_causal_attention(this.addr(q), g, Sq, d, scale, offset, this.addr(k), this.addr(v), storageCode(k.buf.dtype), this.addr(out)));
  }

  decodeLayer(step: LayerStep): void {
    const words = STEP_WORDS + ROW_WORDS * step.rows.length;
    if (this.stepWords.length < words) {
      this.stepWords = new Int32Array(words);
      this.stepFloats = new Float32Array(this.stepWords.buffer);
    }
    const buf = this.scratch('decode.step', words, 'i32');
    const w = this.stepWords;
    const g = step.geometry;
    w.set([step.rows.length, g.queryHeads, g.kvHeads, g.headDim, g.chunkSize, g.maxSelected, g.maxOutliers, g.localTokens,
      DTYPE_CODE[g.dtype], DTYPE_CODE[step.ioDtype], ROPE_STYLE_CODE[g.ropeStyle]]);
    this.stepFloats[11] = g.scale;
    this.stepFloats[12] = g.scoreScale;
    w[13] = g.invFreq.ptr;
    w[14] = this.addr(step.q);
    w[15] = this.addr(step.k);
    w[16] = this.addr(step.v);
    w[17] = this.addr(step.out);
    w[18] = step.counters.ptr;
    w[19] = buf.ptr + STEP_WORDS * 4;
    step.rows.forEach((row, b) => this.encodeRow(w, STEP_WORDS + b * ROW_WORDS, row));
    this.write({ buf, offset: 0 }, w.subarray(0, words));
    const status = this.op('decode_layer', () => this.x.skv_decode_layer(buf.ptr));
    if (status !== STATUS.ok) throwStepStatus(status, `the wasm heap could not hold the step's scratch (heap is ${this.x.memory.buffer.byteLength} bytes of 4 GB); nothing was changed. Use a smaller batch or budget, or the cuda backend`);
  }

  /** `skv_row` fields, in abi.h order. */
  private encodeRow(w: Int32Array, o: number, row: StepRow): void {
    const { tail, store: s } = row;
    w[o] = row.input;
    w[o + 1] = row.position;
    w[o + 2] = tail.count;
    w[o + 3] = tail.capacity;
    w[o + 4] = tail.k.ptr;
    w[o + 5] = tail.v.ptr;
    if (!s) {
      w.fill(0, o + 6, o + ROW_WORDS);
      return;
    }
    w[o + 6] = s.tokens;
    w[o + 7] = s.rank;
    w[o + 8] = s.chunkCapacity;
    w[o + 9] = row.compact ? 1 : 0;
    w[o + 10] = s.u.ptr;
    w[o + 11] = s.sv.ptr;
    w[o + 12] = s.proj.ptr;
    w[o + 13] = s.landmarks.ptr;
    w[o + 14] = s.landmarkIds.ptr;
    w[o + 15] = s.headCounts.ptr;
    w[o + 16] = s.outlierK.ptr;
    w[o + 17] = s.outlierV.ptr;
    w[o + 18] = s.selectedK.ptr;
    w[o + 19] = s.selectedV.ptr;
    w[o + 20] = s.selectedIds.ptr;
    w[o + 21] = s.values.table.ptr;
    w[o + 22] = s.values.pageChunks;
    w[o + 23] = s.hot?.slots ?? 0;
    w[o + 24] = s.hot?.ids.ptr ?? 0;
    w[o + 25] = s.hot?.v.ptr ?? 0;
    w[o + 26] = s.values.fp8Rows ?? 0;
    w[o + 27] = s.values.bases?.ptr ?? 0;
  }

  allocations(): number {
    return this.x.skv_alloc_count();
  }

  memory(): DeviceMemory {
    return { ...this.ledger.report(), wasmHeap: this.instance ? this.instance.memory.buffer.byteLength : 0 };
  }

  dispose(): void {
    // Dropping the instance drops its whole heap: nothing to free one by one.
    this.instance = undefined;
    this.ledger.clear();
  }
}
