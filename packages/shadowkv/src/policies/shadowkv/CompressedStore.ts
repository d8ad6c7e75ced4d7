import type { Device, DeviceBuffer, HostBuffer } from '../../backends/Device.js';
import type { DType, TensorData } from '../../tensor.js';
import { growCapacity } from '../capacity.js';

/** One kv head's selection state: outliers, landmarks, and the chunks selected at the last step. */
export interface HeadStore {
  outlierIds: Int32Array; // ascending chunk ids kept exact
  landmarkIds: Int32Array; // [capacity] ascending chunk ids; first `landmarkCount` valid
  landmarkCount: number;
  selected: Int32Array; // [budget / C] chunk id per slot of the selected region
  selectedCount: number;
}

/**
 * The compressed part of one (layer, sequence): tokens `[0, tokens)` as low-rank pre-RoPE keys
 * `U · SV`, values in host memory, exact outlier chunks, landmarks, and the selected-chunk region.
 */
export class CompressedStore {
  tokens = 0; // nc, a multiple of C
  chunkCapacity: number;
  u: DeviceBuffer; // [chunkCapacity*C, rank]
  readonly sv: DeviceBuffer; // [rank, Hkv*d]
  readonly proj: DeviceBuffer; // [Hkv*d, rank]
  values: HostBuffer; // [Hkv][chunkCapacity][C*d]
  landmarks: DeviceBuffer; // [Hkv][chunkCapacity][d]
  readonly outlierK: DeviceBuffer; // [Hkv][maxOutliers][C*d]
  readonly outlierV: DeviceBuffer;
  readonly selectedK: DeviceBuffer; // [Hkv][budget/C][C*d]
  readonly selectedV: DeviceBuffer;
  readonly heads: HeadStore[];

  constructor(
    private readonly device: Device,
    readonly geometry: { heads: number; d: number; C: number; rank: number; maxOutliers: number; maxSelected: number; dtype: DType },
    chunkCapacity: number,
  ) {
    const { heads, d, C, rank, maxOutliers, maxSelected, dtype } = geometry;
    this.chunkCapacity = chunkCapacity;
    this.u = device.alloc(chunkCapacity * C * rank, dtype, 'lowRankU');
    this.sv = device.alloc(rank * heads * d, dtype, 'basis');
    this.proj = device.alloc(heads * d * rank, dtype, 'basis');
    this.values = device.allocHost(heads * chunkCapacity * C * d, dtype, 'values');
    this.landmarks = device.alloc(heads * chunkCapacity * d, dtype, 'landmarks');
    this.outlierK = device.alloc(heads * maxOutliers * C * d, dtype, 'outliers');
    this.outlierV = device.alloc(heads * maxOutliers * C * d, dtype, 'outliers');
    this.selectedK = device.alloc(heads * maxSelected * C * d, dtype, 'selected');
    this.selectedV = device.alloc(heads * maxSelected * C * d, dtype, 'selected');
    this.heads = Array.from({ length: heads }, () => ({
      outlierIds: new Int32Array(0),
      landmarkIds: new Int32Array(chunkCapacity),
      landmarkCount: 0,
      selected: new Int32Array(maxSelected).fill(-1),
      selectedCount: 0,
    }));
  }

  /** Grows every per-chunk buffer to hold `chunks` chunks, keeping contents. */
  reserveChunks(chunks: number): void {
    if (chunks <= this.chunkCapacity) return;
    const { heads, d, C, rank, dtype } = this.geometry;
    const old = this.chunkCapacity;
    const cap = growCapacity(chunks, old, 32);
    const u = this.device.alloc(cap * C * rank, dtype, 'lowRankU');
    this.device.copy({ buf: u, offset: 0 }, { buf: this.u, offset: 0 }, this.tokens * rank);
    this.device.free(this.u);
    this.u = u;
    const values = this.device.allocHost(heads * cap * C * d, dtype, 'values');
    const landmarks = this.device.alloc(heads * cap * d, dtype, 'landmarks');
    for (let h = 0; h < heads; h++) {
      values.data.set(this.values.data.subarray(h * old * C * d, (h * old + this.tokens / C) * C * d) as never, h * cap * C * d);
      this.device.copy({ buf: landmarks, offset: h * cap * d }, { buf: this.landmarks, offset: h * old * d }, this.heads[h]!.landmarkCount * d);
      const ids = new Int32Array(cap);
      ids.set(this.heads[h]!.landmarkIds);
      this.heads[h]!.landmarkIds = ids;
    }
    this.device.freeHost(this.values);
    this.device.free(this.landmarks);
    this.values = values;
    this.landmarks = landmarks;
    this.chunkCapacity = cap;
  }

  /** Forgets the selected region (next step: all misses). */
  clearSelection(): void {
    for (const hs of this.heads) {
      hs.selected.fill(-1);
      hs.selectedCount = 0;
    }
  }

  free(): void {
    for (const b of [this.u, this.sv, this.proj, this.landmarks, this.outlierK, this.outlierV, this.selectedK, this.selectedV]) this.device.free(b);
    this.device.freeHost(this.values);
  }

  /** Everything, the selected region included, for snapshots (dtype-typed arrays, per head). */
  snapshot(): Record<string, unknown> {
    const { heads, d, C, rank, maxOutliers, maxSelected } = this.geometry;
    const read = (buf: DeviceBuffer, n: number, offset = 0) => this.device.read({ buf, offset } as never, n) as TensorData;
    const nChunks = this.tokens / C;
    return {
      tokens: this.tokens,
      rank,
      u: read(this.u, this.tokens * rank),
      sv: read(this.sv, rank * heads * d),
      proj: read(this.proj, heads * d * rank),
      heads: this.heads.map((hs, h) => ({
        values: this.values.data.slice(h * this.chunkCapacity * C * d, (h * this.chunkCapacity + nChunks) * C * d),
        outlierIds: hs.outlierIds,
        outlierK: read(this.outlierK, hs.outlierIds.length * C * d, h * maxOutliers * C * d),
        outlierV: read(this.outlierV, hs.outlierIds.length * C * d, h * maxOutliers * C * d),
        landmarkIds: hs.landmarkIds.slice(0, hs.landmarkCount),
        landmarks: read(this.landmarks, hs.landmarkCount * d, h * this.chunkCapacity * d),
        selected: hs.selected.slice(0, hs.selectedCount),
        selectedK: read(this.selectedK, hs.selectedCount * C * d, h * maxSelected * C * d),
        selectedV: read(this.selectedV, hs.selectedCount * C * d, h * maxSelected * C * d),
      })),
    };
  }

  /** Refills from `snapshot()` content. */
  restore(saved: ReturnType<CompressedStore['snapshot']> & Record<string, never>): void {
    const s = saved as unknown as {
      tokens: number; u: TensorData; sv: TensorData; proj: TensorData;
      heads: {
        values: TensorData; outlierIds: Int32Array; outlierK: TensorData; outlierV: TensorData; landmarkIds: Int32Array; landmarks: TensorData;
        selected: Int32Array; selectedK: TensorData; selectedV: TensorData;
      }[];
    };
    const { d, C, maxOutliers, maxSelected } = this.geometry;
    this.tokens = s.tokens;
    this.device.write({ buf: this.u, offset: 0 }, s.u);
    this.device.write({ buf: this.sv, offset: 0 }, s.sv);
    this.device.write({ buf: this.proj, offset: 0 }, s.proj);
    s.heads.forEach((saved, h) => {
      const hs = this.heads[h]!;
      this.values.data.set(saved.values as never, h * this.chunkCapacity * C * d);
      hs.outlierIds = Int32Array.from(saved.outlierIds);
      this.device.write({ buf: this.outlierK, offset: h * maxOutliers * C * d }, saved.outlierK);
      this.device.write({ buf: this.outlierV, offset: h * maxOutliers * C * d }, saved.outlierV);
      hs.landmarkIds.set(saved.landmarkIds);
      hs.landmarkCount = saved.landmarkIds.length;
      this.device.write({ buf: this.landmarks, offset: h * this.chunkCapacity * d }, saved.landmarks);
      hs.selected.set(saved.selected);
      hs.selectedCount = saved.selected.length;
      this.device.write({ buf: this.selectedK, offset: h * maxSelected * C * d }, saved.selectedK);
      this.device.write({ buf: this.selectedV, offset: h * maxSelected * C * d }, saved.selectedV);
    });
  }
}
