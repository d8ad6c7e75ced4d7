import { at, fp8ChunkBytes, type Device, type DeviceBuffer, type HostArray, type PagedBuffer, type View } from '../../backends/Device.js';
import { HEAD_FIELDS, HEAD_WORDS, type HotValues, type SparseHandles } from '../../backends/LayerStep.js';
import type { ResolvedShadowKVOptions } from '../../config.js';
import type { DType, TensorData } from '../../tensor.js';
import { DTYPE_BYTES } from '../../dtype.js';
import { growCapacity } from '../capacity.js';
import { range } from '../range.js';
import { boundLandmarks, storeValues } from '../decodeLayer.js';
import type { HostPages } from './HostPages.js';

/** Sizes of a store, fixed at creation. */
export interface StoreGeometry {
  heads: number;
  d: number;
  C: number;
  rank: number;
  maxOutliers: number;
  maxSelected: number;
  dtype: DType;
  /** Chunks per host page. */
  pageChunks: number;
  /** Slots of the hot-value cache per kv head (0: none). */
  hotChunks: number;
  /** The host tier holds fp8 chunks (`fp8Values`). */
  fp8: boolean;
  /** The host tier holds packed bf16 chunks (`packedValues`), their bases on the device. */
  packed: boolean;
}

/** Outlier slots per kv head: the outliers, plus the sink chunks on top of them. */
export const maxOutliers = (o: ResolvedShadowKVOptions) => o.outlierChunks + Math.ceil(o.sinkTokens / o.chunkSize);

/** The store sizes ShadowKV's options give, at `rank`. */
export function storeGeometry(o: ResolvedShadowKVOptions, spec: { kvHeads: number; headDim: number }, dtype: DType, rank: number): StoreGeometry {
  return {
    heads: spec.kvHeads, d: spec.headDim, C: o.chunkSize, rank, dtype, maxOutliers: maxOutliers(o),
    maxSelected: o.budget / o.chunkSize, pageChunks: o.hostPageChunks, hotChunks: o.hotChunks, fp8: o.fp8Values, packed: o.packedValues,
  };
}

/** One host page of a store: 4-byte words where it holds fp8 chunks, else values of the storage dtype. */
export function hostPage(g: Pick<StoreGeometry, 'pageChunks' | 'C' | 'd' | 'dtype' | 'fp8'>): { length: number; dtype: DType | 'i32' } {
  return g.fp8 ? { length: (g.pageChunks * fp8ChunkBytes(g.C, g.d)) / 4, dtype: 'i32' } : { length: g.pageChunks * g.C * g.d, dtype: g.dtype };
}

/**
 * Bytes a store of `capacity` chunks holds, per memory-report component (`host` is the host tier),
 * with 4-byte table entries as on wasm. `estimateMemory` and snapshot restores size stores with it.
 */
export function storeComponents(g: StoreGeometry, capacity: number): Record<'lowRankU' | 'basis' | 'landmarks' | 'outliers' | 'selected' | 'hotValues' | 'tables' | 'host', number> {
  const { heads, d, C, rank, maxOutliers, maxSelected, dtype, pageChunks, hotChunks, fp8, packed } = g;
  const b = DTYPE_BYTES[dtype];
  const pages = Math.ceil(capacity / pageChunks) * heads;
  const chunkBytes = fp8 ? fp8ChunkBytes(C, d) : C * d * b;
  return {
    lowRankU: capacity * C * rank * b,
    basis: 2 * rank * heads * d * b,
    landmarks: heads * capacity * d * b,
    outliers: 2 * heads * maxOutliers * C * d * b,
    selected: 2 * heads * maxSelected * C * d * b,
    hotValues: heads * hotChunks * C * d * b,
    tables: 4 * (heads * capacity + heads * HEAD_WORDS + heads * maxOutliers + heads * maxSelected + heads * hotChunks + pages + (packed ? baseWords(pages, pageChunks) : 0)),
    host: pages * pageChunks * chunkBytes,
  };
}

/** 4-byte words of a packed tier's bases: a byte a chunk of every page. */
const baseWords = (pages: number, pageChunks: number) => Math.ceil((pages * pageChunks) / 4);

/** Snapshot content of one store (typed arrays per head). */
export interface StoreSnapshot {
  tokens: number;
  rank: number;
  u: TensorData;
  sv: TensorData;
  proj: TensorData;
  heads: {
    values: TensorData;
    outlierIds: Int32Array;
    outlierK: TensorData;
    outlierV: TensorData;
    landmarkIds: Int32Array;
    landmarks: TensorData;
    selected: Int32Array;
    selectedK: TensorData;
    selectedV: TensorData;
  }[];
}

/**
 * The compressed part of one (layer, sequence), as device handles: tokens `[0, tokens)` as low-rank
 * pre-RoPE keys `U · SV`, values in host pages, exact outlier chunks, landmarks and their chunk ids,
 * the selected-chunk slots and the per-head counts the step reads and updates. TypeScript keeps
 * only sizes; contents are read back lazily (selection, snapshots).
 */
export class CompressedStore implements SparseHandles {
  tokens = 0; // a multiple of C
  chunkCapacity = 0;
  u!: DeviceBuffer; // [chunkCapacity*C, rank]
  landmarks!: DeviceBuffer; // [Hkv, chunkCapacity, d]
  landmarkIds!: DeviceBuffer; // i32 [Hkv, chunkCapacity]
  readonly rank: number;
  readonly sv: DeviceBuffer; // [rank, Hkv*d]
  readonly proj: DeviceBuffer; // [Hkv*d, rank]
  readonly headCounts: DeviceBuffer; // i32 [Hkv, HEAD_FIELDS], then a bound word a head
  readonly outlierIds: DeviceBuffer; // i32 [Hkv, maxOutliers], ascending
  readonly outlierK: DeviceBuffer; // [Hkv, maxOutliers, C*d]
  readonly outlierV: DeviceBuffer;
  readonly selectedK: DeviceBuffer; // [Hkv, maxSelected, C*d]
  readonly selectedV: DeviceBuffer;
  readonly selectedIds: DeviceBuffer; // i32 [Hkv, maxSelected]
  readonly values: PagedBuffer; // host: [page][C*d] chunks
  readonly hot?: HotValues;

  constructor(
    private readonly device: Device,
    readonly geometry: StoreGeometry,
    chunks: number,
    private readonly hostPages: HostPages,
    /** The most chunks it ever holds (the cache's maxTokens, as estimateMemory sizes it): growth stops there. */
    private readonly limit: number,
  ) {
    const { heads, d, C, rank, maxOutliers, maxSelected, dtype, pageChunks, hotChunks } = geometry;
    this.rank = rank;
    // Everything is allocated before the store exists; a failure frees what was made.
    const made: DeviceBuffer[] = [];
    const alloc = (length: number, dt: DType | 'i32', tag: string) => {
      const buf = device.alloc(length, dt, tag);
      made.push(buf);
      return buf;
    };
    try {
      this.sv = alloc(rank * heads * d, dtype, 'basis');
      this.proj = alloc(heads * d * rank, dtype, 'basis');
      this.headCounts = alloc(heads * HEAD_WORDS, 'i32', 'tables');
      this.outlierIds = alloc(heads * maxOutliers, 'i32', 'tables');
      this.outlierK = alloc(heads * maxOutliers * C * d, dtype, 'outliers');
      this.outlierV = alloc(heads * maxOutliers * C * d, dtype, 'outliers');
      this.selectedK = alloc(heads * maxSelected * C * d, dtype, 'selected');
      this.selectedV = alloc(heads * maxSelected * C * d, dtype, 'selected');
      this.selectedIds = alloc(heads * maxSelected, 'i32', 'tables');
      if (hotChunks > 0) this.hot = { slots: hotChunks, ids: alloc(heads * hotChunks, 'i32', 'tables'), v: alloc(heads * hotChunks * C * d, dtype, 'hotValues') };
      this.values = { pageChunks, block: C * d, heads, dtype, ...(geometry.fp8 ? { fp8Rows: C } : {}), pages: [], table: device.pointerTable([], 'tables') };
      made.push(this.values.table);
      device.write(at(this.headCounts), new Int32Array(heads * HEAD_WORDS));
      this.clearSelection();
      this.resize(chunks);
    } catch (err) {
      made.forEach((b) => device.free(b));
      throw err;
    }
  }

  /** Makes room for `chunks` chunks (device buffers grow by an eighth, copying; host pages are added). */
  reserveChunks(chunks: number): void {
    if (chunks > this.chunkCapacity) this.resize(growCapacity(chunks, this.chunkCapacity, 32, this.limit));
  }

  /** Every new buffer is allocated before anything moves, so running out of memory changes nothing. */
  private resize(capacity: number): void {
    const { heads, d, C, rank, dtype, pageChunks } = this.geometry;
    const old = this.chunkCapacity;
    const made: DeviceBuffer[] = [];
    const alloc = (length: number, dt: DType | 'i32', tag: string) => {
      const buf = this.device.alloc(length, dt, tag);
      made.push(buf);
      return buf;
    };
    const pages: DeviceBuffer[] = [];
    let next: { u: DeviceBuffer; landmarks: DeviceBuffer; ids: DeviceBuffer; table?: DeviceBuffer; bases?: DeviceBuffer };
    try {
      next = { u: alloc(capacity * C * rank, dtype, 'lowRankU'), landmarks: alloc(heads * capacity * d, dtype, 'landmarks'), ids: alloc(heads * capacity, 'i32', 'tables') };
      // Host pages: whole pages for every chunk the capacity allows; what is stored never moves.
      const need = Math.ceil(capacity / pageChunks) * heads;
      while (this.values.pages.length + pages.length < need) pages.push(this.hostPages.take());
      if (pages.length && this.geometry.packed) next.bases = alloc(baseWords(need, pageChunks), 'i32', 'tables');
      if (pages.length) next.table = this.device.pointerTable([...this.values.pages, ...pages], 'tables'); // last: not in `made`
    } catch (err) {
      made.forEach((b) => this.device.free(b));
      pages.forEach((p) => this.hostPages.give(p));
      throw err;
    }
    if (this.u) {
      this.device.copy(at(next.u), at(this.u), this.tokens * rank);
      for (let h = 0; h < heads; h++) {
        this.device.copy(at(next.landmarks, h * capacity * d), at(this.landmarks, h * old * d), old * d);
        this.device.copy(at(next.ids, h * capacity), at(this.landmarkIds, h * old), old);
      }
      [this.u, this.landmarks, this.landmarkIds].forEach((b) => this.device.free(b));
    }
    this.u = next.u;
    this.landmarks = next.landmarks;
    this.landmarkIds = next.ids;
    this.chunkCapacity = capacity;
    if (next.bases) {
      const old = this.values.bases; // none before the first pages
      if (old) {
        this.device.copy(at(next.bases), at(old), baseWords(this.values.pages.length, pageChunks));
        this.device.free(old);
      }
      this.values.bases = next.bases;
    }
    if (next.table) {
      this.device.free(this.values.table);
      for (const page of pages) this.values.pages.push(page); // NOTE: not push(...pages): a long list spread as arguments overflows the stack
      this.values.table = next.table;
    }
  }

  /** Per-head counts `[Hkv, HEAD_FIELDS]` (landmarks, outliers, selected), read from the device. */
  headCountsNow(): Int32Array {
    return this.read(this.headCounts, this.geometry.heads * HEAD_FIELDS) as Int32Array;
  }

  /** Forgets the selected slots and the hot-value cache (the next step is all misses). */
  clearSelection(): void {
    const { heads, maxSelected } = this.geometry;
    this.device.write(at(this.selectedIds), new Int32Array(heads * maxSelected).fill(-1));
    if (this.hot) this.device.write(at(this.hot.ids), new Int32Array(heads * this.hot.slots).fill(-1));
    const counts = this.headCountsNow();
    for (let h = 0; h < heads; h++) counts[h * HEAD_FIELDS + 2] = 0;
    this.device.write(at(this.headCounts), counts);
  }

  free(): void {
    for (const b of [this.u, this.sv, this.proj, this.landmarks, this.landmarkIds, this.headCounts, this.outlierIds, this.outlierK, this.outlierV, this.selectedK, this.selectedV, this.selectedIds, this.values.table, this.values.bases, this.hot?.ids, this.hot?.v]) {
      if (b) this.device.free(b);
    }
    this.values.pages.forEach((p) => this.hostPages.give(p));
  }

  private read(buf: DeviceBuffer, n: number, offset = 0): HostArray {
    return this.device.read({ buf, offset } as View & { buf: { dtype: 'f32' } }, n);
  }

  /** Head h's values of chunks [0, chunks), in the storage dtype (gathered: dequantized where the pages hold fp8). */
  private valuesOf(h: number, chunks: number): TensorData {
    const { C, d, dtype } = this.geometry;
    const buf = this.device.scratch('store.values', Math.max(1, chunks * C * d), dtype);
    const all = range(0, chunks);
    this.device.gatherValues(at(buf), this.values, h, all, all);
    return this.read(buf, chunks * C * d) as TensorData;
  }

  /** Writes head h's values of chunks [0, chunks) (storage dtype) to the pages, a page's run at a time (storeValues). */
  private writeValues(h: number, chunks: number, values: TensorData): void {
    const { C, d, dtype, pageChunks } = this.geometry;
    const buf = this.device.scratch('store.values', Math.max(1, chunks * C * d), dtype);
    this.device.write(at(buf), values.subarray(0, chunks * C * d));
    for (let c = 0; c < chunks; c += pageChunks - (c % pageChunks)) {
      storeValues(this.device, this, c, h, at(buf, c * C * d), Math.min(pageChunks - (c % pageChunks), chunks - c));
    }
  }

  /** Everything, the selected slots included, for snapshots. */
  snapshot(): StoreSnapshot {
    const { heads, d, C, rank, maxOutliers, maxSelected } = this.geometry;
    const chunks = this.tokens / C;
    const counts = this.headCountsNow();
    const block = C * d;
    return {
      tokens: this.tokens,
      rank,
      u: this.read(this.u, this.tokens * rank) as TensorData,
      sv: this.read(this.sv, rank * heads * d) as TensorData,
      proj: this.read(this.proj, heads * d * rank) as TensorData,
      heads: Array.from({ length: heads }, (_, h) => {
        const [L, O, S] = [counts[h * HEAD_FIELDS]!, counts[h * HEAD_FIELDS + 1]!, counts[h * HEAD_FIELDS + 2]!];
        const values = this.valuesOf(h, chunks);
        return {
          values,
          outlierIds: this.read(this.outlierIds, O, h * maxOutliers) as Int32Array,
          outlierK: this.read(this.outlierK, O * block, h * maxOutliers * block) as TensorData,
          outlierV: this.read(this.outlierV, O * block, h * maxOutliers * block) as TensorData,
          landmarkIds: this.read(this.landmarkIds, L, h * this.chunkCapacity) as Int32Array,
          landmarks: this.read(this.landmarks, L * d, h * this.chunkCapacity * d) as TensorData,
          selected: this.read(this.selectedIds, S, h * maxSelected) as Int32Array,
          selectedK: this.read(this.selectedK, S * block, h * maxSelected * block) as TensorData,
          selectedV: this.read(this.selectedV, S * block, h * maxSelected * block) as TensorData,
        };
      }),
    };
  }

  /** Refills from `snapshot()` content (the store was created for at least its chunks). */
  restore(s: StoreSnapshot): void {
    const { heads, d, C, maxOutliers, maxSelected } = this.geometry;
    const block = C * d;
    this.tokens = s.tokens;
    this.device.write(at(this.u), s.u);
    this.device.write(at(this.sv), s.sv);
    this.device.write(at(this.proj), s.proj);
    const counts = new Int32Array(heads * HEAD_FIELDS);
    s.heads.forEach((saved, h) => {
      this.writeValues(h, s.tokens / C, saved.values);
      this.device.write(at(this.outlierIds, h * maxOutliers), saved.outlierIds);
      this.device.write(at(this.outlierK, h * maxOutliers * block), saved.outlierK);
      this.device.write(at(this.outlierV, h * maxOutliers * block), saved.outlierV);
      this.device.write(at(this.landmarkIds, h * this.chunkCapacity), saved.landmarkIds);
      this.device.write(at(this.landmarks, h * this.chunkCapacity * d), saved.landmarks);
      this.device.write(at(this.selectedIds, h * maxSelected), saved.selected);
      this.device.write(at(this.selectedK, h * maxSelected * block), saved.selectedK);
      this.device.write(at(this.selectedV, h * maxSelected * block), saved.selectedV);
      counts.set([saved.landmarkIds.length, saved.outlierIds.length, saved.selected.length], h * HEAD_FIELDS);
    });
    this.device.write(at(this.headCounts), counts);
    boundLandmarks(this.device, this, heads, d);
  }
}
