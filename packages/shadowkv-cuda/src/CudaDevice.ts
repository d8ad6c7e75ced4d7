import {
  attentionTasks,
  outlierLists,
  selectRows,
  preRopeArgs,
  BUFFER_BYTES,
  bufferBytes,
  type BufferDType,
  type Device,
  type DeviceBuffer,
  type DeviceMemory,
  type DeviceRoom,
  type FiniteCheck,
  type GemmArgs,
  type HostArray,
  type LowRankOut,
  type PagedBuffer,
  type RebuildArgs,
  type Segment,
  type SpecHeads,
  type Tier,
  type View,
  fp8ChunkBytes,
} from '../../shadowkv/src/backends/Device.js';
import { HOST_ARRAY, storageCode } from '../../shadowkv/src/backends/codes.js';
import { MemoryLedger } from '../../shadowkv/src/backends/MemoryLedger.js';
import { throwLowRankStatus, throwStepStatus } from '../../shadowkv/src/backends/statusErrors.js';
import { freemem } from 'node:os';
import { ConfigError } from '../../shadowkv/src/errors/ConfigError.js';
import { DeviceMismatchError } from '../../shadowkv/src/errors/DeviceMismatchError.js';
import { DisposedError } from '../../shadowkv/src/errors/DisposedError.js';
import { OutOfMemoryError } from '../../shadowkv/src/errors/OutOfMemoryError.js';
import { ShapeError } from '../../shadowkv/src/errors/ShapeError.js';
import type { RopeStyle } from '../../shadowkv/src/spec.js';
import type { DType } from '../../shadowkv/src/tensor.js';
import { HEAD_WORDS, type LayerStep, type StepRow } from '../../shadowkv/src/backends/LayerStep.js';
import { CUDA_MEMORY_TYPE, DTYPE_CODE, ROPE_STYLE_CODE, ROW_BYTES, SEGMENT_WORDS, STATUS, STEP_BYTES, type CudaAddon } from './AddonTypes.js';
import { envCount, envSwitch } from './cudaEnv.js';
import { typedFailures } from './typedFailures.js';


const TWO_32 = 2 ** 32;
/**
 * Per addon (one per binary a process loads), its output block's address and the bytes asked of
 * it: every device of the addon reads this one record, so none keeps an address another's growth freed.
 */
const OUTPUT_BLOCKS = new WeakMap<CudaAddon, { ptr: number; bytes: number }>();

/**
 * The CUDA runtime as a `Device`: the same ops as `WasmDevice`, op by op, over device memory
 * ('device' tier: the GPU's stream-ordered pool) and pinned mapped host memory ('host' tier: offloaded values, read by
 * the gather kernel through UVA). Index arrays are staged into scratch device buffers. Every op
 * runs on the default stream, but `copyAlongside`'s copies, on a second one until their join, and
 * `lowRankKeysAlongside`, on a host thread and a stream of its own until its join;
 * `read` (and `selectChunks`, `lowRankKeys`) wait for the default stream.
 * `decodeLayer` runs a whole layer step as a few kernels (kernels/decode_layer.cu) without waiting.
 */
export class CudaDevice implements Device {
  readonly backend = 'cuda';
  readonly pinsHost = true;
  private readonly ledger = new MemoryLedger();
  /** Live buffers by address, so that dispose() frees what the caches did not. */
  private readonly live = new Map<number, DeviceBuffer>();
  private addon: CudaAddon | undefined;
  /** The addon's output block as its devices last grew it (shared with them: OUTPUT_BLOCKS). */
  private readonly outputs: { ptr: number; bytes: number };
  /** The step record of decodeLayer, reused across steps (grown when the batch grows). */
  private record = recordViews(STEP_BYTES);
  /**
   * Landmark-logit blocks per kv head of the fused step, from `SHADOWKV_CUDA_LOGIT_SPLIT` when the
   * device is made; 0 (unset) lets the kernels' cost model choose. Tests force it, so that every
   * grouping of the logit ranges (several per block, as the cost model picks at 4 x 128K) is checked.
   */
  private readonly logitSplit = envCount('SHADOWKV_CUDA_LOGIT_SPLIT');
  /**
   * Blocks per kv head that score and select in the fused step, from `SHADOWKV_CUDA_SELECT_BLOCKS`
   * when the device is made: 0 (unset) is, on sm_90+, the largest cluster of 16 (8 where the device
   * takes only portable sizes) down to 4 whose kv heads all run at once by the driver's count (row
   * groups of 1-2 rows prefer 8: small_groups in kernels/decode_layer.cu), else one block; 1 is
   * that one-block path (the only one of devices without clusters), which tests
   * force on any card so that both paths are checked.
   */
  private readonly selectBlocks = envCount('SHADOWKV_CUDA_SELECT_BLOCKS');
  /**
   * Row groups of the fused step whose select and fetch overlap, from `SHADOWKV_CUDA_STEP_GROUPS`
   * when the device is made; 0 (unset) is the kernels' default (default_groups in
   * kernels/decode_layer.cu: by the rows, fp8 host values and the hot cache).
   * Tests force several, so that every split of the rows is checked against one group.
   */
  private readonly stepGroups = envCount('SHADOWKV_CUDA_STEP_GROUPS');

  /**
   * @param hostMemory bytes of pinned host memory the process's caches may hold (createCudaBackend's
   *   `hostMemory`); the creation preflight checks against it, and against the memory the OS has available.
   */
  constructor(addon: CudaAddon, readonly ordinal: number, private readonly hostMemory?: number) {
    this.addon = typedFailures(addon);
    if (!OUTPUT_BLOCKS.has(addon)) OUTPUT_BLOCKS.set(addon, { ptr: 0, bytes: 0 });
    this.outputs = OUTPUT_BLOCKS.get(addon)!;
  }

  /** Every CudaDevice of the process on this GPU reads the others' buffers (one CUDA context). */
  get addressSpace(): string {
    return `cuda:${this.ordinal}`;
  }

  private get x(): CudaAddon {
    if (!this.addon) throw new DisposedError('cuda device: the device was disposed');
    return this.addon;
  }

  /** Byte address of a view. */
  private addr(v: View): number {
    return v.buf.ptr + v.offset * BUFFER_BYTES[v.buf.dtype];
  }

  /** Throws unless `elements` elements from the view stay inside its buffer (a fault would poison the CUDA context). */
  private within(name: string, what: string, v: View, elements: number): void {
    if (!fits(v, elements)) {
      throw new RangeError(`${name}: ${what} needs elements [${v.offset}, ${v.offset + elements}) of a buffer of ${v.buf.length} (${v.buf.tag})`);
    }
  }

  alloc<T extends BufferDType>(length: number, dtype: T, tag: string, tier: Tier = 'device'): DeviceBuffer {
    const bytes = Math.max(length, 1) * bufferBytes(`CudaDevice.alloc (${tag})`, dtype);
    let ptr: number;
    try {
      ptr = tier === 'host' ? this.x.hostAlloc(bytes) : this.x.malloc(bytes);
    } catch (err) {
      if (err instanceof OutOfMemoryError) throw new OutOfMemoryError(`alloc (${tag}, ${bytes} bytes, ${tier} tier): ${err.message}`);
      throw err;
    }
    const buf = { ptr, length, dtype, tag, tier };
    this.live.set(ptr, buf);
    this.ledger.count(buf, 1);
    return buf;
  }

  free(buf: DeviceBuffer): void {
    if (!this.addon || !this.live.delete(buf.ptr)) return; // dispose() freed it already
    this.ledger.count(buf, -1);
    if (buf.tier === 'host') this.x.freeHost(buf.ptr);
    else this.x.free(buf.ptr);
  }

  scratch(name: string, length: number, dtype: BufferDType): DeviceBuffer {
    return this.ledger.scratch(this, name, length, dtype);
  }

  /** A table of u64 addresses (device tier): what the gather kernel reads page addresses from. */
  pointerTable(bufs: readonly DeviceBuffer[], tag: string): DeviceBuffer {
    const table = this.alloc(bufs.length, 'f64', tag);
    try {
      // NOTE: no BigInt a page (a 128K row's store has 512: ~0.2 ms of JavaScript with them).
      const words = new Uint32Array(2 * bufs.length);
      for (let i = 0; i < bufs.length; i++) putAddress(words, i, bufs[i]!.ptr);
      if (bufs.length) this.x.write(table.ptr, words);
    } catch (err) {
      this.free(table);
      throw err;
    }
    return table;
  }

  /** Uploads 32-bit words (indices, segment records) into a named scratch buffer; returns its address. */
  private stage(name: string, data: Int32Array | Uint32Array): number {
    const buf = this.scratch(name, data.length, 'i32');
    if (data.length) this.x.write(buf.ptr, data);
    return buf.ptr;
  }

  write(dst: View, data: HostArray): void {
    const bytes = BUFFER_BYTES[dst.buf.dtype];
    this.within('write', `${data.byteLength} bytes`, dst, Math.ceil(data.byteLength / bytes));
    // NOTE: small writes go through the pinned staging ring, which may grow (an OutOfMemoryError then).
    if (data.byteLength) this.x.write(this.addr(dst), data);
  }

  read<T extends BufferDType>(src: View & { buf: { dtype: T } }, length: number, into?: HostArray<T>): HostArray<T> {
    this.within('read', `${length} elements`, src, length);
    const whole = into as Float32Array | undefined;
    const out: ArrayBufferView = whole ? (whole.length === length ? whole : whole.subarray(0, length)) : new HOST_ARRAY[src.buf.dtype](length);
    if (length > 0) src.buf.tier === 'host' ? this.x.readHost(this.addr(src), out) : this.x.read(this.addr(src), out);
    return (into ?? out) as HostArray<T>;
  }

  copy(dst: View, src: View, length: number): void {
    this.within('copy', 'the source', src, length);
    this.within('copy', 'the destination', dst, length);
    this.x.copy(this.addr(dst), this.addr(src), length * BUFFER_BYTES[src.buf.dtype]);
  }

  copyAlongside(copies: readonly { dst: View; src: View; length: number }[]): () => void {
    const table = new Float64Array(copies.length * 3);
    // NOTE: a copy's messages are made only where it fails (a 128K row's values are 512 copies).
    for (let i = 0; i < copies.length; i++) {
      const { dst, src, length } = copies[i]!;
      if (!fits(src, length)) this.within('copyAlongside', `the source of copy ${i}`, src, length);
      if (!fits(dst, length)) this.within('copyAlongside', `the destination of copy ${i}`, dst, length);
      if (dst.buf.dtype !== src.buf.dtype) throw new TypeError(`copyAlongside: copy ${i} is ${src.buf.dtype} to ${dst.buf.dtype}`);
      table[3 * i] = this.addr(dst);
      table[3 * i + 1] = this.addr(src);
      table[3 * i + 2] = Math.max(length, 0) * BUFFER_BYTES[src.buf.dtype];
    }
    this.x.copyAside(table);
    return () => this.x.joinAside();
  }

  convert(dst: View, src: View, length: number): void {
    if (dst.buf.dtype === src.buf.dtype) return this.copy(dst, src, length);
    this.within('convert', 'the source', src, length);
    this.within('convert', 'the destination', dst, length);
    this.x.convert(this.addr(src), storageCode(src.buf.dtype), this.addr(dst), storageCode(dst.buf.dtype), length);
  }

  convertRows(dst: View, dstLd: number, src: View, srcLd: number, rows: number, cols: number): void {
    if (rows > 0 && cols > 0) {
      this.within('convertRows', 'the source', src, (rows - 1) * srcLd + cols);
      this.within('convertRows', 'the destination', dst, (rows - 1) * dstLd + cols);
    }
    this.x.convertRows(this.addr(src), storageCode(src.buf.dtype), srcLd, this.addr(dst), storageCode(dst.buf.dtype), dstLd, rows, cols);
  }

  gemm(g: GemmArgs): void {
    const rows = g.aRows ? this.addr(g.aRows) : 0;
    if (g.c.buf.dtype !== 'f32') throw new TypeError(`gemm: C must be f32, got ${g.c.buf.dtype}`);
    if (g.M > 0 && g.N > 0) this.within('gemm', 'C', g.c, (g.M - 1) * g.ldc + g.N);
    this.x.gemm(
      g.M, g.N, g.K, g.alpha ?? 1,
      this.addr(g.a), storageCode(g.a.buf.dtype), g.lda, g.transA ? 1 : 0, rows,
      this.addr(g.b), storageCode(g.b.buf.dtype), g.ldb, g.transB ? 1 : 0,
      g.beta ?? 0, this.addr(g.c), g.ldc,
    );
  }

  rope(x: View, rows: number, d: number, ld: number, positions: Int32Array, invFreq: DeviceBuffer, style: RopeStyle, direction: 1 | -1): void {
    if (rows > 0) this.within('rope', 'x', x, (rows - 1) * ld + d);
    if (positions.length < rows) throw new RangeError(`rope: ${positions.length} positions for ${rows} rows`);
    const pos = this.stage('rope.positions', positions);
    this.x.rope(this.addr(x), rows, d, ld, pos, invFreq.ptr, ROPE_STYLE_CODE[style], direction);
  }

  preRopeKeys(dst: View, ld: number, src: View, headStride: number, heads: number, rows: number, d: number, invFreq: DeviceBuffer, style: RopeStyle, first: number): void {
    preRopeArgs(dst, headStride, heads, rows, d, ld, first);
    if (heads === 0 || rows === 0) return;
    this.within('preRopeKeys', 'the source', src, (heads - 1) * headStride + rows * d);
    this.within('preRopeKeys', 'the destination', dst, (rows - 1) * ld + heads * d);
    this.x.preRopeKeys(this.addr(src), storageCode(src.buf.dtype), headStride, heads, rows, d, this.addr(dst), ld, invFreq.ptr, ROPE_STYLE_CODE[style], first);
  }

  lowRankKeys(k: View, S: number, D: number, rank: number, oversample: number, powerIters: number, seed: number, o: LowRankOut): void {
    throwLowRankStatus(this.x.lowRankKeys(...this.lowRankArgs(k, S, D, rank, oversample, powerIters, seed, o)), { S, D, rank, oversample, powerIters }, LOW_RANK_MEMORY);
  }

  lowRankKeysAlongside(k: View, S: number, D: number, rank: number, oversample: number, powerIters: number, seed: number, o: LowRankOut): () => void {
    this.x.lowRankKeysAside(...this.lowRankArgs(k, S, D, rank, oversample, powerIters, seed, o));
    return () => throwLowRankStatus(this.x.joinLowRankKeysAside(), { S, D, rank, oversample, powerIters }, LOW_RANK_MEMORY);
  }

  private lowRankArgs(k: View, S: number, D: number, rank: number, oversample: number, powerIters: number, seed: number, o: LowRankOut) {
    return [this.addr(k), S, D, rank, oversample, powerIters, seed >>> 0, this.addr(o.u), this.addr(o.sv), this.addr(o.proj), this.addr(o.sigma)] as const;
  }

  landmarks(keys: View, ld: number, nChunks: number, C: number, d: number, landmarks: View, minCos: View): void {
    if (nChunks > 0 && C > 0 && d > 0) {
      this.within('landmarks', 'keys', keys, (nChunks * C - 1) * ld + d);
      this.within('landmarks', 'landmarks', landmarks, nChunks * d);
      this.within('landmarks', 'minCos', minCos, nChunks);
    }
    this.x.landmarks(this.addr(keys), storageCode(keys.buf.dtype), ld, nChunks, C, d, this.addr(landmarks), this.addr(minCos));
  }

  selectChunks(scores: View, n: number, k: number, largest: boolean, rows?: number): Int32Array {
    const r = selectRows(rows);
    const m = Math.max(0, Math.min(k, n));
    this.within('selectChunks', 'scores', scores, m > 0 ? r * n : 0);
    const out = new Int32Array(r * m);
    this.x.selectChunks(this.addr(scores), n, k, largest ? 1 : 0, r, out);
    return out;
  }

  keepLandmarks(landmarks: View, heads: number, nChunks: number, d: number, outliers: Int32Array, counts: Int32Array, maxOutliers: number, out: View, ids: View, capacity: number): void {
    const lists = outlierLists(heads, nChunks, outliers, counts, maxOutliers, capacity);
    if (heads === 0 || capacity === 0) return;
    this.within('keepLandmarks', 'landmarks', landmarks, heads * nChunks * d);
    this.within('keepLandmarks', 'out', out, heads * capacity * d);
    this.within('keepLandmarks', 'ids', ids, heads * capacity);
    const p = this.stage('keep.lists', lists);
    this.x.keepLandmarks(this.addr(landmarks), heads, nChunks, d, p + 4 * heads, p, maxOutliers, this.addr(out), storageCode(out.buf.dtype), this.addr(ids), capacity);
  }

  landmarkBounds(landmarks: View, heads: number, capacity: number, d: number, headCounts: View): void {
    if (heads === 0) return;
    this.within('landmarkBounds', 'landmarks', landmarks, heads * capacity * d);
    this.within('landmarkBounds', 'headCounts', headCounts, heads * HEAD_WORDS);
    this.x.landmarkBounds(this.addr(landmarks), storageCode(landmarks.buf.dtype), heads, capacity, d, this.addr(headCounts));
  }

  scoreChunks(q: View, g: number, d: number, scale: number, landmarks: View, n: number, scores: View): void {
    if (n > 0) {
      this.within('scoreChunks', 'landmarks', landmarks, n * d);
      this.within('scoreChunks', 'scores', scores, n);
    }
    const work = this.scratch('score.work', Math.max(g, 0) * (Math.max(n, 0) + 64), 'f32'); // logits, then per-block maxima
    this.x.scoreChunks(this.addr(q), g, d, scale, this.addr(landmarks), storageCode(landmarks.buf.dtype), n, this.addr(scores), work.ptr);
  }

  rebuildKeys(r: RebuildArgs): void {
    const n = r.chunkIds.length;
    if (r.slots.length < n) throw new RangeError(`rebuildKeys: ${r.slots.length} slots for ${n} chunks`);
    if (n > 0) {
      let maxId = 0;
      let maxSlot = 0;
      for (let i = 0; i < n; i++) {
        if (r.chunkIds[i]! < 0 || r.slots[i]! < 0) throw new RangeError(`rebuildKeys: negative chunk id or slot at ${i}`);
        maxId = Math.max(maxId, r.chunkIds[i]!);
        maxSlot = Math.max(maxSlot, r.slots[i]!);
      }
      this.within('rebuildKeys', `U rows of chunk ${maxId}`, r.u, (maxId + 1) * r.C * r.rank);
      this.within('rebuildKeys', `output slot ${maxSlot}`, r.out, ((maxSlot + 1) * r.C - 1) * r.ldo + r.d);
    }
    const ids = this.stage('rebuild.ids', r.chunkIds);
    const slots = this.stage('rebuild.slots', r.slots);
    this.x.rebuildKeys(
      this.addr(r.u), storageCode(r.u.buf.dtype), r.rank, this.addr(r.sv), storageCode(r.sv.buf.dtype), r.ldsv, r.d,
      ids, slots, n, r.C, r.invFreq.ptr, ROPE_STYLE_CODE[r.style],
      this.addr(r.out), storageCode(r.out.buf.dtype), r.ldo,
    );
  }

  gatherValues(dst: View, pages: PagedBuffer, h: number, chunkIds: Int32Array, slots: Int32Array): void {
    const n = chunkIds.length;
    if (slots.length < n) throw new RangeError(`gatherValues: ${slots.length} slots for ${n} chunks`);
    if (n === 0) return;
    // NOTE: the bounds in one tight pass, and the first offender looked for only when they fail: a
    // compression gathers every head's landmark rows at once (131K ids at 128K); this loop is ~2x the old per-id checks.
    let [lo, hi, slotLo, slotHi] = [chunkIds[0]!, chunkIds[0]!, slots[0]!, slots[0]!];
    for (let i = 1; i < n; i++) {
      const c = chunkIds[i]!, t = slots[i]!;
      if (c < lo) lo = c;
      else if (c > hi) hi = c;
      if (t < slotLo) slotLo = t;
      else if (t > slotHi) slotHi = t;
    }
    const outside = (c: number) => c < 0 || h < 0 || h >= pages.heads || Math.floor(c / pages.pageChunks) * pages.heads + h >= pages.pages.length;
    if (outside(lo) || outside(hi)) {
      const c = chunkIds.find(outside)!;
      throw new RangeError(`gatherValues: chunk ${c} of head ${h} is past the ${pages.pages.length} pages of the host tier`);
    }
    if (slotLo < 0) throw new RangeError(`gatherValues: negative slot at ${slots.findIndex((t) => t < 0)}`);
    this.within('gatherValues', `slot ${slotHi}`, dst, (slotHi + 1) * pages.block);
    const ids = this.stage('gather.ids', chunkIds);
    const to = this.stage('gather.slots', slots);
    this.x.gatherValues(pages.table.ptr, pages.pageChunks, pages.heads, h, ids, to, n, pages.block, storageCode(pages.dtype), pages.fp8Rows ?? 0, ptrOf(pages.bases), this.addr(dst));
  }

  quantizeValues(dst: View, src: View, chunks: number, C: number, d: number): void {
    if (chunks <= 0) return;
    this.within('quantizeValues', `${chunks} chunks of values`, src, chunks * C * d);
    this.within('quantizeValues', `${chunks} fp8 chunks`, dst, (chunks * fp8ChunkBytes(C, d)) / 4);
    this.x.quantizeValues(this.addr(src), storageCode(src.buf.dtype), chunks, C, d, this.addr(dst));
  }

  packValues(dst: View, src: View, chunks: number, n: number, bases: DeviceBuffer, first: number): void {
    if (chunks <= 0) return;
    if (src.buf.dtype !== 'bf16' || dst.buf.dtype !== 'bf16') throw new TypeError(`packValues: packs bf16 values into bf16 slots, got ${src.buf.dtype} into ${dst.buf.dtype}`);
    this.within('packValues', `${chunks} chunks of values`, src, chunks * n);
    this.within('packValues', `${chunks} chunk slots`, dst, chunks * n);
    if (!Number.isInteger(first) || first < 0 || first + chunks > 4 * Math.max(bases.length, 1)) {
      throw new RangeError(`packValues: bases [${first}, ${first + chunks}) past the ${4 * bases.length} bytes of ${bases.tag}`);
    }
    this.x.packValues(this.addr(src), chunks, n, this.addr(dst), bases.ptr + first);
  }

  sparseAttention(q: View, g: number, d: number, scale: number, segments: readonly Segment[], out: View, tasks?: number): void {
    const n = attentionTasks(tasks);
    const table = new Uint32Array(segments.length * SEGMENT_WORDS);
    let total = 0;
    const kvDtype = segments.length ? segments[0]!.k.buf.dtype : 'f32';
    segments.forEach((s, i) => {
      if (s.k.buf.dtype !== kvDtype || s.v.buf.dtype !== kvDtype) throw new TypeError(`sparseAttention: segment ${i} is ${s.k.buf.dtype}/${s.v.buf.dtype}, segment 0 is ${kvDtype}`);
      if (s.n > 0) {
        this.within('sparseAttention', `keys of segment ${i}`, s.k, (s.n - 1) * s.ld + d);
        this.within('sparseAttention', `values of segment ${i}`, s.v, (s.n - 1) * s.ld + d);
      }
      const k = this.addr(s.k);
      const v = this.addr(s.v);
      table.set([k >>> 0, Math.floor(k / TWO_32), v >>> 0, Math.floor(v / TWO_32), Math.max(s.n, 0), s.ld], i * SEGMENT_WORDS);
      total += Math.max(s.n, 0);
    });
    const segs = this.stage('attention.segments', table);
    this.x.sparseAttention(this.addr(q), g, d, scale, segs, segments.length, total, storageCode(kvDtype), n, this.addr(out));
  }

  causalAttention(q: View, g: number, Sq: number, d: number, scale: number, offset: number, k: View, v: View, out: View): void {
    if (g > 0 && Sq > 0 && d > 0) {
      this.within('causalAttention', 'q', q, g * Sq * d);
      this.within('causalAttention', 'keys', k, (offset + Sq) * d);
      this.within('causalAttention', 'values', v, (offset + Sq) * d);
      this.within('causalAttention', 'out', out, g * Sq * d);
    }
    this.x.causalAttention(this.addr(q), g, Sq, d, scale, offset, this.addr(k), this.addr(v), storageCode(k.buf.dtype), this.addr(out));
  }

  /**
   * GPU time of `work` in milliseconds, between events recorded before and after it on the stream
   * (benchmarks: what the kernels took, without the host's share). Waits for the work to finish.
   */
  gpuTime(work: () => void): number {
    const a = this.x.eventRecord();
    try {
      work();
      const b = this.x.eventRecord();
      try {
        return this.x.eventElapsed(a, b);
      } finally {
        this.x.eventRelease(b);
      }
    } finally {
      this.x.eventRelease(a);
    }
  }

  /**
   * GPU milliseconds per stage of the fused decode steps queued since the last call, summed, and
   * their count (waits for them); then records the stages of later steps while `on` (an event
   * between stages: for benchmarks, it costs time).
   */
  stepProfile(on: boolean): ReturnType<CudaAddon['stepProfile']> {
    return this.x.stepProfile(on);
  }

  /** Waits for every op issued so far. */
  synchronize(): void {
    this.x.synchronize();
  }

  /**
   * What caches may still allocate: the GPU's free memory (cudaMemGetInfo: other processes and
   * caches included; nothing is reserved), and pinned memory: what the OS has available
   * (os.freemem()), within `hostMemory` less what the process has pinned through the addon.
   */
  room(): DeviceRoom {
    const { free } = this.x.memInfo();
    const stats = this.x.memoryStats();
    const limit = this.hostMemory === undefined ? Infinity : Math.max(0, this.hostMemory - stats.hostBytes - stats.stagingBytes);
    const host = Math.min(freemem(), limit);
    return { device: free, host, source: `CUDA device ${this.ordinal} (device: cudaMemGetInfo; pinned: ${this.hostMemory === undefined ? "the OS's available memory" : 'within hostMemory'})` };
  }

  /**
   * Refuses (ConfigError, before anything is allocated) a model whose heads need more shared memory
   * a block than this GPU has in one of the kernels sized by them (the decode step's append: all q
   * and k heads of a token; the decode and prefill attention: a kv head's g query heads of d).
   */
  checkSpec(spec: SpecHeads): void {
    const { queryHeads, kvHeads, headDim } = spec;
    const fit = this.x.specFits(queryHeads, kvHeads, headDim);
    if (!fit) return;
    const kib = (n: number) => `${(n / 1024).toFixed(1)} KiB`;
    throw new ConfigError(
      `spec: ${queryHeads} query heads and ${kvHeads} kv heads of ${headDim} dims need ${kib(fit.need)} of shared memory a block in ${fit.kernel} on CUDA device ${this.ordinal}, which allows ${kib(fit.limit)}; use backend 'wasm' for this model`,
    );
  }

  /**
   * A buffer over device memory the host loop owns (a pointer into an allocation of this GPU),
   * never freed here. Its `length` elements must lie within the allocation that holds the pointer,
   * where the driver can tell its extent (cudaMalloc, managed memory): a kernel reading past it
   * would end the process's CUDA context, every cache's with it. Elsewhere they are trusted.
   */
  wrap(address: number, length: number, dtype: BufferDType): DeviceBuffer {
    const bytes = length * bufferBytes('wrapTensor()', dtype);
    const at = this.x.pointerInfo(address);
    const where = `0x${address.toString(16)}`;
    if (at.type !== CUDA_MEMORY_TYPE.device && at.type !== CUDA_MEMORY_TYPE.managed) {
      throw new DeviceMismatchError(`wrapTensor(): ${where} is not CUDA device memory (cudaPointerGetAttributes type ${at.type}); wrap a device pointer of GPU ${this.ordinal}, or copy host data in with allocTensor()`);
    }
    if (at.device !== this.ordinal) throw new DeviceMismatchError(`wrapTensor(): ${where} is memory of GPU ${at.device}; this cache runs on GPU ${this.ordinal}`);
    if (at.size >= 0 && address + bytes > at.base + at.size) {
      const left = at.base + at.size - address;
      throw new ShapeError(`wrapTensor(): ${length} ${dtype} elements (${bytes} bytes) from ${where} pass the end of its allocation, which holds ${left} bytes from there (${at.size} from 0x${at.base.toString(16)}); wrap a shape that fits`);
    }
    return { ptr: address, length, dtype, tag: 'external', tier: 'device' };
  }

  /** The checks in one addon call: a kernel each, then one copy of 8 bytes per check back (a wait for the GPU). */
  findNonFinite(checks: readonly FiniteCheck[]): number[] {
    if (!checks.length) return [];
    const table = new Float64Array(checks.length * 4);
    checks.forEach((c, i) => {
      this.within('findNonFinite', 'the range', c.view, c.n);
      table.set([this.addr(c.view), storageCode(c.view.buf.dtype), c.n, c.limit], i * 4);
    });
    const first = this.scratch('check.first', checks.length, 'f64');
    return this.x.checkFinite(table, first.ptr);
  }

  findNonFiniteHost(data: HostArray, dtype: DType, limit: number): number {
    return this.x.checkFiniteHost(data as Float32Array | Uint16Array, storageCode(dtype), limit);
  }

  /** Host-array inputs go up with the step record, in one copy while the previous step runs. */
  readonly uploadsStepInputs = true;
  /**
   * The addon's pinned output block (one per process, grown as needed): the step's kernels write an
   * output bound for a host array there, and read() takes it with a wait and a memcpy (readHost);
   * `SHADOWKV_CUDA_MAPPED_OUT=0` (to measure): a device buffer, copied back.
   */
  readonly hostOutput = envSwitch('SHADOWKV_CUDA_MAPPED_OUT') ? this.outputBlock : undefined;
  /**
   * q, k and v of a host-array step checked and copied into the upload in one native pass;
   * `SHADOWKV_CUDA_STAGE=0` (to measure): three checkFiniteHost scans, then decodeLayer's copy.
   */
  readonly stageStepInputs = envSwitch('SHADOWKV_CUDA_STAGE') ? this.stageInputs : undefined;

  /** hostOutput: the addon's block, asked of it only to grow (then for every device of the addon: `outputs`). */
  private outputBlock(length: number, dtype: BufferDType): DeviceBuffer {
    const bytes = Math.max(length, 1) * BUFFER_BYTES[dtype], block = this.outputs;
    if (bytes > block.bytes) {
      // A growth that fails has freed the old block already: until one succeeds, every device asks again.
      block.bytes = 0;
      block.ptr = this.x.outputBlock(bytes);
      block.bytes = bytes;
    }
    return { ptr: block.ptr, length, dtype, tag: 'output', tier: 'host' };
  }

  /** The last stageStepInputs' q array and ticket, for the decodeLayer that takes them. */
  private stagedQuery: HostArray | undefined;
  private stagedTicket = 0;
  private readonly stageLimits = new Float64Array(3);

  /** stageStepInputs: the checks and the copy in one native pass, into the pinned block the next decodeLayer sends up. */
  private stageInputs(inputs: readonly [HostArray, HostArray, HostArray], dtype: DType, limits: readonly [number, number, number] | undefined): number {
    this.stagedQuery = undefined;
    if (limits) this.stageLimits.set(limits);
    const r = this.x.stageStepInputs(inputs[0] as Float32Array, inputs[1] as Float32Array, inputs[2] as Float32Array, storageCode(dtype), limits ? this.stageLimits : null);
    if (r < 0) return -1 - r;
    this.stagedQuery = inputs[0];
    this.stagedTicket = r;
    return -1;
  }

  /**
   * Decode steps 1-5 and compaction for every row in one addon call (the contract of
   * `Device.decodeLayer`): the step record, and `step.hostInputs` where given, go up in one copy on
   * a stream of their own, and the kernels are queued; nothing waits for the GPU. Bit-identical to
   * `decodeLayerComposed` over this device.
   */
  decodeLayer(step: LayerStep): void {
    const bytes = STEP_BYTES + ROW_BYTES * step.rows.length;
    if (this.record.bytes.byteLength < bytes) this.record = recordViews(bytes);
    const { u32, i32, f32 } = this.record;
    const g = step.geometry;
    putAddress(u32, 0, g.invFreq.ptr);
    putAddress(u32, 1, this.addr(step.q));
    putAddress(u32, 2, this.addr(step.k));
    putAddress(u32, 3, this.addr(step.v));
    putAddress(u32, 4, this.addr(step.out));
    putAddress(u32, 5, step.counters.ptr);
    i32[12] = step.rows.length;
    i32[13] = g.queryHeads;
    i32[14] = g.kvHeads;
    i32[15] = g.headDim;
    i32[16] = g.chunkSize;
    i32[17] = g.maxSelected;
    i32[18] = g.maxOutliers;
    i32[19] = g.localTokens;
    i32[20] = DTYPE_CODE[g.dtype];
    i32[21] = DTYPE_CODE[step.ioDtype];
    i32[22] = ROPE_STYLE_CODE[g.ropeStyle];
    f32[23] = g.scale;
    f32[24] = g.scoreScale;
    i32[25] = this.logitSplit;
    i32[26] = this.selectBlocks;
    i32[27] = this.stepGroups;
    for (let b = 0; b < step.rows.length; b++) encodeRow(u32, i32, STEP_BYTES + b * ROW_BYTES, step.rows[b]!);
    const record = this.record.bytes.subarray(0, bytes);
    const inputs = step.hostInputs;
    // The staged copies are these inputs' only where stageStepInputs was given the same arrays.
    const ticket = inputs && inputs[0] === this.stagedQuery ? this.stagedTicket : 0;
    this.stagedQuery = undefined;
    const status = inputs ? this.x.decodeLayer(record, inputs[0], inputs[1], inputs[2], ticket) : this.x.decodeLayer(record);
    if (status !== STATUS.ok) throwStepStatus(status, `CUDA device ${this.ordinal} could not hold the step's workspace; nothing was changed. Use a smaller batch or budget`);
  }

  /** Device-tier (pool), cudaMalloc and cudaHostAlloc allocations of this process so far (the addon's own workspaces included). */
  allocations(): number {
    return this.x.allocCount();
  }

  memory(): DeviceMemory {
    return this.ledger.report();
  }

  dispose(): void {
    if (!this.addon) return;
    // Unlike a wasm instance, device memory outlives the object: free what is still held.
    for (const buf of [...this.live.values()]) {
      try {
        this.free(buf);
      } catch {
        // A failed context cannot free anything either; the process exit releases it.
      }
    }
    try {
      this.x.trimPool(); // what was freed goes back to the GPU, not only to this process's pool
    } catch {
      // As above: nothing more to give back from a failed context.
    }
    this.addon = undefined;
    this.ledger.clear();
  }
}

/** What lowRankKeys' workspace lives in (its OutOfMemoryError). */
const LOW_RANK_MEMORY = 'the device and pinned host memory';

/** The step record's bytes and its 32-bit views (made when it grows, not every step). */
interface RecordViews {
  bytes: Uint8Array;
  u32: Uint32Array;
  i32: Int32Array;
  f32: Float32Array;
}
function recordViews(bytes: number): RecordViews {
  const b = new ArrayBuffer(bytes);
  return { bytes: new Uint8Array(b), u32: new Uint32Array(b), i32: new Int32Array(b), f32: new Float32Array(b) };
}

/** A device address (below 2^53) as the 64-bit word w of a record, little-endian: no BigInt a field. */
function putAddress(u32: Uint32Array, w: number, address: number): void {
  // NOTE: the low word by `>>> 0`, the same bits as `% TWO_32` (ToUint32 is modulo 2^32), without a
  // floating-point remainder: a step writes 16 addresses a row.
  u32[2 * w] = address >>> 0;
  u32[2 * w + 1] = Math.floor(address / TWO_32);
}

/** Whether `elements` elements from the view stay inside its buffer (none always do). */
function fits(v: View, elements: number): boolean {
  return elements <= 0 || !(v.offset < 0 || v.offset + elements > Math.max(v.buf.length, 1));
}

const ptrOf = (b: DeviceBuffer | undefined) => (b ? b.ptr : 0);

/** Row b of a step record at byte offset o: 17 addresses, then 12 32-bit fields (SkvStepRow). */
function encodeRow(u32: Uint32Array, i32: Int32Array, o: number, row: StepRow): void {
  const { tail, store: s } = row;
  const w = o / 8, i = o / 4 + 34;
  // NOTE: no closure a row (tsx's keepNames names each one it makes: ~3 % of a step's JavaScript).
  putAddress(u32, w + 0, tail.k.ptr);
  putAddress(u32, w + 1, tail.v.ptr);
  putAddress(u32, w + 2, ptrOf(s?.u));
  putAddress(u32, w + 3, ptrOf(s?.sv));
  putAddress(u32, w + 4, ptrOf(s?.proj));
  putAddress(u32, w + 5, ptrOf(s?.landmarks));
  putAddress(u32, w + 6, ptrOf(s?.landmarkIds));
  putAddress(u32, w + 7, ptrOf(s?.headCounts));
  putAddress(u32, w + 8, ptrOf(s?.outlierK));
  putAddress(u32, w + 9, ptrOf(s?.outlierV));
  putAddress(u32, w + 10, ptrOf(s?.selectedK));
  putAddress(u32, w + 11, ptrOf(s?.selectedV));
  putAddress(u32, w + 12, ptrOf(s?.selectedIds));
  putAddress(u32, w + 13, ptrOf(s?.values.table));
  putAddress(u32, w + 14, ptrOf(s?.hot?.ids));
  putAddress(u32, w + 15, ptrOf(s?.hot?.v));
  putAddress(u32, w + 16, ptrOf(s?.values.bases));
  i32[i] = row.input;
  i32[i + 1] = row.position;
  i32[i + 2] = tail.count;
  i32[i + 3] = tail.capacity;
  i32[i + 4] = s?.tokens ?? 0;
  i32[i + 5] = s?.rank ?? 0;
  i32[i + 6] = s?.chunkCapacity ?? 0;
  i32[i + 7] = row.compact && s ? 1 : 0;
  i32[i + 8] = s?.values.pageChunks ?? 0;
  i32[i + 9] = s?.hot?.slots ?? 0;
  i32[i + 10] = s?.values.fp8Rows ?? 0;
  i32[i + 11] = 0;
}
