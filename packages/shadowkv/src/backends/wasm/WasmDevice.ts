import { DTYPE_BYTES, hostArray } from '../../dtype.js';
import { OutOfMemoryError } from '../../errors/OutOfMemoryError.js';
import type { DType } from '../../tensor.js';
import {
  BUFFER_BYTES,
  type BufferDType,
  type Device,
  type DeviceBuffer,
  type DeviceMemory,
  type GemmArgs,
  type HostArray,
  type HostBuffer,
  type LowRankOut,
  type RebuildArgs,
  type Segment,
  type View,
} from '../Device.js';
import { DTYPE_CODE, SEGMENT_BYTES, STATUS, type WasmExports } from './abi.js';

const ARRAY_OF: Record<BufferDType, { new (buffer: ArrayBuffer, byteOffset: number, length: number): HostArray }> = {
  f32: Float32Array,
  f16: Uint16Array,
  bf16: Uint16Array,
  i32: Int32Array,
  f64: Float64Array,
};

const code = (dtype: BufferDType): number => {
  if (dtype === 'i32' || dtype === 'f64') throw new TypeError(`no storage dtype code for ${dtype}`);
  return DTYPE_CODE[dtype];
};

/**
 * One instance of the wasm runtime with its own heap (up to 4 GB): the "device" of a cache on the
 * wasm backend. The host tier is plain JS memory outside the heap, so offloaded values do not count
 * against the 4 GB.
 */
export class WasmDevice implements Device {
  readonly backend = 'wasm';
  private readonly scratchBuffers = new Map<string, DeviceBuffer>();
  private readonly tags = new Map<string, number>();
  private hostBytes = 0;

  constructor(private readonly x: WasmExports) {}

  /**
   * Runs a runtime call that may allocate scratch: on a full heap the runtime traps
   * (`unreachable`), which becomes an OutOfMemoryError naming the op.
   */
  private op<T>(name: string, call: () => T): T {
    try {
      return call();
    } catch (err) {
      if (err instanceof WebAssembly.RuntimeError) {
        throw new OutOfMemoryError(`${name}: the wasm runtime trapped (${err.message}); its heap is ${this.x.memory.buffer.byteLength} bytes of 4 GB. Use a smaller batch or context, or the cuda backend`);
      }
      throw err;
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

  private count(tag: string, bytes: number): void {
    this.tags.set(tag, (this.tags.get(tag) ?? 0) + bytes);
  }

  alloc<T extends BufferDType>(length: number, dtype: T, tag: string): DeviceBuffer {
    const bytes = Math.max(length, 1) * BUFFER_BYTES[dtype];
    // NOTE: skv_malloc takes a wasm32 size_t; a size of 4 GB or more would wrap, not fail.
    const ptr = bytes < 2 ** 32 ? this.x.skv_malloc(bytes) >>> 0 : 0;
    if (ptr === 0) {
      throw new OutOfMemoryError(
        `wasm heap: could not allocate ${bytes} bytes for ${tag} (heap is ${this.x.memory.buffer.byteLength} bytes of 4 GB); use a smaller batch or context, or the cuda backend`,
      );
    }
    this.count(tag, bytes);
    return { ptr, length, dtype, tag };
  }

  free(buf: DeviceBuffer): void {
    this.count(buf.tag, -Math.max(buf.length, 1) * BUFFER_BYTES[buf.dtype]);
    this.x.skv_free(buf.ptr);
  }

  scratch(name: string, length: number, dtype: BufferDType): DeviceBuffer {
    const have = this.scratchBuffers.get(name);
    if (have && have.dtype === dtype && have.length >= length) return have;
    if (have) this.free(have);
    const buf = this.alloc(Math.max(length, (have?.length ?? 0) * 2), dtype, 'scratch');
    this.scratchBuffers.set(name, buf);
    return buf;
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

  read<T extends BufferDType>(src: View & { buf: { dtype: T } }, length: number): HostArray<T> {
    const Ctor = ARRAY_OF[src.buf.dtype];
    return new Ctor(this.x.memory.buffer, this.addr(src), length).slice() as HostArray<T>;
  }

  copy(dst: View, src: View, length: number): void {
    const n = length * BUFFER_BYTES[src.buf.dtype];
    this.bytes().copyWithin(this.addr(dst), this.addr(src), this.addr(src) + n);
  }

  convert(dst: View, src: View, length: number): void {
    if (dst.buf.dtype === src.buf.dtype) return this.copy(dst, src, length);
    this.x.skv_convert(this.addr(src), code(src.buf.dtype), this.addr(dst), code(dst.buf.dtype), length);
  }

  convertRows(dst: View, dstLd: number, src: View, srcLd: number, rows: number, cols: number): void {
    this.x.skv_convert_rows(this.addr(src), code(src.buf.dtype), srcLd, this.addr(dst), code(dst.buf.dtype), dstLd, rows, cols);
  }

  allocHost(length: number, dtype: DType, tag: string): HostBuffer {
    this.hostBytes += length * DTYPE_BYTES[dtype];
    this.count(`host:${tag}`, length * DTYPE_BYTES[dtype]);
    return { data: hostArray(dtype, length), length, dtype, tag };
  }

  freeHost(buf: HostBuffer): void {
    this.hostBytes -= buf.length * DTYPE_BYTES[buf.dtype];
    this.count(`host:${buf.tag}`, -buf.length * DTYPE_BYTES[buf.dtype]);
  }

  offload(host: HostBuffer, hostOffset: number, src: View, length: number): void {
    const Ctor = ARRAY_OF[host.dtype];
    host.data.set(new Ctor(this.x.memory.buffer, this.addr(src), length) as HostBuffer['data'], hostOffset);
  }

  fetchBlocks(dst: View, host: HostBuffer, blocks: Int32Array, slots: Int32Array, blockLength: number): void {
    const Ctor = ARRAY_OF[host.dtype];
    const heap = new Ctor(this.x.memory.buffer, 0, this.x.memory.buffer.byteLength / BUFFER_BYTES[host.dtype]) as HostBuffer['data'];
    const base = this.addr(dst) / BUFFER_BYTES[host.dtype];
    for (let i = 0; i < blocks.length; i++) {
      const from = blocks[i]! * blockLength;
      heap.set(host.data.subarray(from, from + blockLength), base + slots[i]! * blockLength);
    }
  }

  gemm(g: GemmArgs): void {
    const rows = g.aRows ? this.addr(g.aRows) : 0;
    this.op('gemm', () => this.x.skv_gemm(
      g.M, g.N, g.K, g.alpha ?? 1,
      this.addr(g.a), code(g.a.buf.dtype), g.lda, g.transA ? 1 : 0, rows,
      this.addr(g.b), code(g.b.buf.dtype), g.ldb, g.transB ? 1 : 0,
      g.beta ?? 0, this.addr(g.c), g.ldc,
    ));
  }

  rope(x: View, rows: number, d: number, ld: number, positions: Int32Array, invFreq: DeviceBuffer, style: number, direction: 1 | -1): void {
    const pos = this.stage('rope.positions', positions);
    this.op('rope', () => this.x.skv_rope(this.addr(x), rows, d, ld, pos, invFreq.ptr, style, direction));
  }

  lowRankKeys(k: View, S: number, D: number, rank: number, oversample: number, powerIters: number, seed: number, o: LowRankOut): void {
    const status = this.op('low_rank_keys', () => this.x.skv_low_rank_keys(
      this.addr(k), S, D, rank, oversample, powerIters, seed >>> 0,
      this.addr(o.u), this.addr(o.sv), this.addr(o.proj), this.addr(o.sigma),
    ));
    if (status === STATUS.alloc) throw new OutOfMemoryError(`lowRankKeys: the wasm heap could not hold the workspace for S=${S}, D=${D}, rank=${rank}`);
  }

  landmarks(keys: View, ld: number, nChunks: number, C: number, d: number, landmarks: View, minCos: View): void {
    this.op('landmarks', () => this.x.skv_landmarks(this.addr(keys), code(keys.buf.dtype), ld, nChunks, C, d, this.addr(landmarks), this.addr(minCos)));
  }

  selectChunks(scores: View, n: number, k: number, largest: boolean): Int32Array {
    const out = this.scratch('select.out', Math.max(k, 1), 'i32');
    const count = this.op('select_chunks', () => this.x.skv_select_chunks(this.addr(scores), n, k, largest ? 1 : 0, out.ptr));
    return this.read({ buf: out, offset: 0 }, count) as Int32Array;
  }

  scoreChunks(q: View, g: number, d: number, scale: number, landmarks: View, n: number, scores: View): void {
    const work = this.scratch('score.work', g * n, 'f32');
    this.op('score_chunks', () => this.x.skv_score_chunks(this.addr(q), g, d, scale, this.addr(landmarks), code(landmarks.buf.dtype), n, this.addr(scores), work.ptr));
  }

  rebuildKeys(r: RebuildArgs): void {
    const ids = this.stage('rebuild.ids', r.chunkIds);
    const slots = this.stage('rebuild.slots', r.slots);
    this.op('rebuild_keys', () => this.x.skv_rebuild_keys(
      this.addr(r.u), code(r.u.buf.dtype), r.rank, this.addr(r.sv), code(r.sv.buf.dtype), r.ldsv, r.d,
      ids, slots, r.chunkIds.length, r.C, r.invFreq.ptr, r.style,
      this.addr(r.out), code(r.out.buf.dtype), r.ldo,
    ));
  }

  sparseAttention(q: View, g: number, d: number, scale: number, segments: readonly Segment[], out: View): void {
    const table = new Int32Array((segments.length * SEGMENT_BYTES) / 4);
    segments.forEach((s, i) => table.set([this.addr(s.k), this.addr(s.v), s.n, s.ld], i * 4));
    const segs = this.stage('attention.segments', table);
    const kvDtype = segments.length ? code(segments[0]!.k.buf.dtype) : DTYPE_CODE.f32;
    this.op('sparse_attention', () => this.x.skv_sparse_attention(this.addr(q), g, d, scale, segs, segments.length, kvDtype, this.addr(out)));
  }

  causalAttention(q: View, g: number, Sq: number, d: number, scale: number, offset: number, k: View, v: View, out: View): void {
    this.op('causal_attention', () => this.x.skv_causal_attention(this.addr(q), g, Sq, d, scale, offset, this.addr(k), this.addr(v), code(k.buf.dtype), this.addr(out)));
  }

  memory(): DeviceMemory {
    const components: Record<string, number> = {};
    let device = 0;
    for (const [tag, bytes] of this.tags) {
      if (bytes === 0) continue;
      components[tag] = bytes;
      if (!tag.startsWith('host:')) device += bytes;
    }
    return { device, host: this.hostBytes, wasmHeap: this.x.memory.buffer.byteLength, components };
  }

  dispose(): void {
    // The instance (and its whole heap) is dropped with this object; host arrays with the cache.
    this.scratchBuffers.clear();
    this.tags.clear();
    this.hostBytes = 0;
  }
}
