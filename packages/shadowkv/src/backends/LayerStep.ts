import type { DType } from '../tensor.js';
import type { RopeStyle } from '../spec.js';
import type { DeviceBuffer, PagedBuffer, View } from './Device.js';

/**
 * Counters a layer accumulates in its `counters` buffer (float64, on the device until read).
 * `last*` slots describe the latest step only. NOTE: must match `skv_counter` in runtime/wasm/abi.h.
 */
export const COUNTER = {
  steps: 0, hits: 1, misses: 2, selectedTokens: 3, attendedTokens: 4, heads: 5, compactions: 6,
  lastHits: 7, lastMisses: 8, lastSelectedTokens: 9, lastAttendedTokens: 10, lastHeads: 11,
} as const;
/** Slots of a counters buffer. */
export const COUNTERS = 12;

/** Fields per kv head of a store's `headCounts` (i32): landmarks, outliers, selected. NOTE: matches `skv_head_field`. */
export const HEAD_FIELD = { landmarks: 0, outliers: 1, selected: 2 } as const;
export const HEAD_FIELDS = 3;

/** The exact rows of one (layer, row): `[Hkv][capacity][d]` post-RoPE keys and values. */
export interface TailHandles {
  readonly k: DeviceBuffer;
  readonly v: DeviceBuffer;
  readonly capacity: number;
  readonly count: number;
}

/**
 * One row's compressed state, as plain handles the runtime owns (shapes in elements; every
 * buffer in the storage dtype unless said). Written by compression, read and updated by steps.
 */
export interface SparseHandles {
  /** Tokens in the store, a multiple of C. */
  readonly tokens: number;
  readonly rank: number;
  /** Chunks `u`, `landmarks` and `landmarkIds` have room for. */
  readonly chunkCapacity: number;
  readonly u: DeviceBuffer; // [chunkCapacity*C, rank]
  readonly sv: DeviceBuffer; // [rank, Hkv*d]
  readonly proj: DeviceBuffer; // [Hkv*d, rank]
  readonly landmarks: DeviceBuffer; // [Hkv, chunkCapacity, d]
  readonly landmarkIds: DeviceBuffer; // i32 [Hkv, chunkCapacity], ascending
  readonly headCounts: DeviceBuffer; // i32 [Hkv, HEAD_FIELDS]
  readonly outlierK: DeviceBuffer; // [Hkv, maxOutliers, C*d]
  readonly outlierV: DeviceBuffer;
  readonly selectedK: DeviceBuffer; // [Hkv, maxSelected, C*d], one chunk per slot
  readonly selectedV: DeviceBuffer;
  readonly selectedIds: DeviceBuffer; // i32 [Hkv, maxSelected], chunk id per slot
  readonly values: PagedBuffer; // host tier, chunk-contiguous
}

/** One batch row of a layer step. */
export interface StepRow {
  /** Index of this row in the step's q/k/v/out, or -1: the row sits this step out. */
  readonly input: number;
  /** Absolute position of the new token (tokens stored before it). */
  readonly position: number;
  readonly tail: TailHandles;
  /** Present once the row is compressed; a dense row attends its tail only. */
  readonly store?: SparseHandles;
  /** After attending, move the tail's whole chunks beyond `localTokens` into the store (room is made). */
  readonly compact: boolean;
}

/** Geometry and constants of a layer's sparse attention (no policy types). */
export interface StepGeometry {
  readonly queryHeads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly chunkSize: number;
  readonly maxSelected: number;
  readonly maxOutliers: number;
  readonly localTokens: number;
  readonly scale: number;
  readonly scoreScale: number;
  readonly ropeStyle: RopeStyle;
  readonly invFreq: DeviceBuffer; // f64 [d/2]
  /** Storage dtype. */
  readonly dtype: DType;
}

/**
 * Decode steps 1-5 of one layer for every row: what `Device.decodeLayer` runs in one call and
 * `decodeLayerComposed` runs op by op. q/k/v hold `inputs` rows `[inputs, H, d]` of `ioDtype`, pre-RoPE.
 */
export interface LayerStep {
  readonly geometry: StepGeometry;
  readonly ioDtype: DType;
  readonly q: View;
  readonly k: View;
  readonly v: View;
  readonly out: View;
  readonly counters: DeviceBuffer; // f64 [COUNTERS]
  readonly rows: readonly StepRow[];
}
