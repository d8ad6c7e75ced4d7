import type { DType, TensorData } from '../tensor.js';
import type { RopeStyle } from '../spec.js';
import type { DeviceBuffer, PagedBuffer, View } from './Device.js';

/**
 * Counters a layer accumulates in its `counters` buffer (float64, on the device until read).
 * `last*` slots describe the latest step only. NOTE: must match `skv_counter` in runtime/wasm/abi.h.
 */
export const COUNTER = {
  steps: 0, hits: 1, misses: 2, selectedTokens: 3, attendedTokens: 4, heads: 5, compactions: 6, hotHits: 7,
  lastHits: 8, lastMisses: 9, lastSelectedTokens: 10, lastAttendedTokens: 11, lastHeads: 12, lastHotHits: 13,
} as const;
/** Slots of a counters buffer. */
export const COUNTERS = 14;
/** Slots of the counters buffers of snapshot version 2 before `hotHits` (no hot-value cache): restores widen them. */
export const COUNTERS_V2 = 12;

/** A version-2 snapshot's 12 counters in today's layout (the hot-value cache's counters zero). */
export function widenCounters(c: Float64Array): Float64Array {
  if (c.length !== COUNTERS_V2) return c;
  const out = new Float64Array(COUNTERS);
  out.set(c.subarray(0, COUNTER.hotHits));
  out.set(c.subarray(COUNTER.hotHits), COUNTER.lastHits);
  return out;
}

/** Fields per kv head of a store's `headCounts` (i32): landmarks, outliers, selected. NOTE: matches `skv_head_field`. */
export const HEAD_FIELD = { landmarks: 0, outliers: 1, selected: 2 } as const;
export const HEAD_FIELDS = 3;
/** i32 words a kv head in `headCounts`: its HEAD_FIELDS counts (all heads' first), then its landmark bound word. */
export const HEAD_WORDS = HEAD_FIELDS + 1;

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
  /** i32 [Hkv, HEAD_FIELDS], then a landmark bound word a head (Device.landmarkBounds; 0 where the backend keeps none): Hkv * HEAD_WORDS. */
  readonly headCounts: DeviceBuffer;
  readonly outlierK: DeviceBuffer; // [Hkv, maxOutliers, C*d]
  readonly outlierV: DeviceBuffer;
  readonly selectedK: DeviceBuffer; // [Hkv, maxSelected, C*d], one chunk per slot
  readonly selectedV: DeviceBuffer;
  readonly selectedIds: DeviceBuffer; // i32 [Hkv, maxSelected], chunk id per slot
  readonly values: PagedBuffer; // host tier, chunk-contiguous
  /** The hot-value cache (`hotChunks`), absent when off. */
  readonly hot?: HotValues;
}

/**
 * A device cache of value chunks per kv head beyond the last step's selection, direct-mapped:
 * chunk c may sit only in slot `c % slots`. A miss found there is copied on the device instead
 * of fetched from the host; a miss fetched from the host takes its slot unless a chunk copied
 * from there this step holds it (of two such misses, the larger id). Outputs do not change:
 * only where the selected slots' bytes come from.
 */
export interface HotValues {
  readonly slots: number;
  readonly ids: DeviceBuffer; // i32 [Hkv, slots], chunk id per slot or -1
  readonly v: DeviceBuffer; // [Hkv, slots, C*d]
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
  /**
   * Only for a device with `uploadsStepInputs`: q, k and v as host arrays of `ioDtype`, which its
   * `decodeLayer` uploads with the step; the q, k and v views are then not written.
   */
  readonly hostInputs?: readonly [TensorData, TensorData, TensorData];
  readonly out: View;
  readonly counters: DeviceBuffer; // f64 [COUNTERS]
  readonly rows: readonly StepRow[];
}
