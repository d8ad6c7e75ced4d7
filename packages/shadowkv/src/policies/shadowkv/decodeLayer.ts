import { at, type Device, type DeviceBuffer, type Segment, type View } from '../../backends/Device.js';
import type { ResolvedShadowKVOptions } from '../../config.js';
import type { ResolvedSpec } from '../../spec.js';
import type { ExactRegion } from '../ExactRegion.js';
import type { CompressedStore } from './CompressedStore.js';
import { reuseSlots } from './reuseSlots.js';

/**
 * Everything one ShadowKV decode step of one layer needs after the new tokens were appended:
 * the unit a native backend runs in one call (`Device.decodeShadowKVLayer`).
 */
export interface ShadowKVLayerStep {
  spec: ResolvedSpec;
  options: ResolvedShadowKVOptions;
  invFreq: DeviceBuffer; // [d/2] f64
  ropeStyle: number;
  q: DeviceBuffer; // [B, Hq, d] f32, post-RoPE
  out: DeviceBuffer; // [B, Hq, d] f32
  /** Per batch row: its exact tail (new token included) and, once compressed, its store. */
  rows: { tail: ExactRegion; store?: CompressedStore }[];
}

/** What a step did, summed over rows and kv heads. */
export interface LayerStepCounts {
  hits: number;
  misses: number;
  selectedTokens: number;
  attendedTokens: number;
  heads: number;
}

/**
 * Decode steps 2-5 of docs/algorithm.md for every row and kv head of a layer, composed from the
 * device's fine-grained ops: the reference for fused native implementations.
 */
export function decodeLayerComposed(device: Device, step: ShadowKVLayerStep): LayerStepCounts {
  const { kvHeads: Hkv, queryHeads: Hq, headDim: d, scale } = step.spec;
  const g = Hq / Hkv;
  const counts: LayerStepCounts = { hits: 0, misses: 0, selectedTokens: 0, attendedTokens: 0, heads: 0 };
  step.rows.forEach(({ tail, store }, b) => {
    for (let h = 0; h < Hkv; h++) {
      const q = at(step.q, (b * Hq + h * g) * d);
      const tailSegment: Segment = { k: tail.headK(h), v: tail.headV(h), n: tail.count, ld: d };
      const segments = store ? [...sparseSegments(device, step, store, h, q, counts), tailSegment] : [tailSegment];
      // 5. Exact attention over outliers ∪ selected chunks ∪ the exact tail (a dense row: the tail).
      device.sparseAttention(q, g, d, scale, segments, at(step.out, (b * Hq + h * g) * d));
      counts.attendedTokens += segments.reduce((n, s) => n + s.n, 0);
      counts.heads += 1;
    }
  });
  return counts;
}

/** Steps 2-4 for kv head h of a compressed row: score, select, reuse, fetch and rebuild misses. */
function sparseSegments(device: Device, step: ShadowKVLayerStep, store: CompressedStore, h: number, q: View, counts: LayerStepCounts): Segment[] {
  const { kvHeads: Hkv, headDim: d, scale } = step.spec;
  const { chunkSize: C, budget } = step.options;
  const g = step.spec.queryHeads / Hkv;
  const block = C * d;
  const maxSelected = budget / C;
  const hs = store.heads[h]!;
  // 2. Score: softmax(q · L / √d) per query head, max over the GQA group.
  const scores = device.scratch('shadowkv.scores', hs.landmarkCount, 'f32');
  device.scoreChunks(q, g, d, scale, at(store.landmarks, h * store.chunkCapacity * d), hs.landmarkCount, at(scores));
  // 3. Select the top budget/C chunks (ties: lower chunk id).
  const ids = device.selectChunks(at(scores), hs.landmarkCount, maxSelected, true).map((i) => hs.landmarkIds[i]!);
  // 4. Reuse last step's chunks; fetch V and rebuild K only for misses.
  if (ids.length < hs.selectedCount) store.clearSelection();
  const plan = reuseSlots(hs.selected, hs.selectedCount, ids);
  hs.selectedCount = ids.length;
  const selK = at(store.selectedK, h * maxSelected * block);
  const selV = at(store.selectedV, h * maxSelected * block);
  if (plan.missIds.length) {
    device.fetchBlocks(selV, store.values, plan.missIds.map((c) => h * store.chunkCapacity + c), plan.missSlots, block);
    device.rebuildKeys({
      u: at(store.u), rank: store.geometry.rank, sv: at(store.sv, h * d), ldsv: Hkv * d, d,
      chunkIds: plan.missIds, slots: plan.missSlots, C, invFreq: step.invFreq, style: step.ropeStyle, out: selK, ldo: d,
    });
  }
  counts.hits += plan.hits;
  counts.misses += plan.missIds.length;
  counts.selectedTokens += ids.length * C;
  const outliers = h * store.geometry.maxOutliers * block;
  return [
    { k: at(store.outlierK, outliers), v: at(store.outlierV, outliers), n: hs.outlierIds.length * C, ld: d },
    { k: selK, v: selV, n: ids.length * C, ld: d },
  ];
}
