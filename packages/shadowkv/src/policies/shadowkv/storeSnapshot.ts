import { ids, int, need, record, stored } from '../snapshotChecks.js';
import type { StoreGeometry, StoreSnapshot } from './CompressedStore.js';

const STORE_KEYS = ['tokens', 'rank', 'u', 'sv', 'proj', 'heads'] as const;
const HEAD_KEYS = ['values', 'outlierIds', 'outlierK', 'outlierV', 'landmarkIds', 'landmarks', 'selected', 'selectedK', 'selectedV'] as const;

/**
 * Checks a saved compressed store against the cache's geometry (`g.rank` is the configured, i.e.
 * largest, rank) and the row's `length`: sizes of every buffer, ids in range, ascending and
 * disjoint, outliers and landmarks covering every chunk, selected slots among the landmarks.
 */
export function checkStoreSnapshot(v: unknown, path: string, g: StoreGeometry, length: number): StoreSnapshot {
  const { heads, d, C, maxOutliers, maxSelected, dtype } = g;
  const o = record(v, path, STORE_KEYS);
  const tokens = int(o.tokens, `${path}.tokens`, C, length);
  need(tokens % C === 0, `${path}.tokens`, `must be a multiple of the chunk size ${C}, got ${tokens}`);
  const chunks = tokens / C;
  const rank = int(o.rank, `${path}.rank`, 1, Math.min(g.rank, tokens));
  const D = heads * d;
  stored(o.u, `${path}.u`, dtype, tokens * rank);
  stored(o.sv, `${path}.sv`, dtype, rank * D);
  stored(o.proj, `${path}.proj`, dtype, D * rank);
  need(Array.isArray(o.heads) && o.heads.length === heads, `${path}.heads`, `must be an array of ${heads} kv heads`);
  (o.heads as unknown[]).forEach((hv, h) => {
    const p = `${path}.heads[${h}]`;
    const hs = record(hv, p, HEAD_KEYS);
    stored(hs.values, `${p}.values`, dtype, chunks * C * d);
    const outliers = ids(hs.outlierIds, `${p}.outlierIds`, maxOutliers, chunks, true);
    stored(hs.outlierK, `${p}.outlierK`, dtype, outliers.length * C * d);
    stored(hs.outlierV, `${p}.outlierV`, dtype, outliers.length * C * d);
    const landmarks = ids(hs.landmarkIds, `${p}.landmarkIds`, chunks, chunks, true);
    const isOutlier = new Set(outliers);
    landmarks.forEach((c, i) => need(!isOutlier.has(c), `${p}.landmarkIds[${i}]`, `is chunk ${c}, which is also an outlier`));
    need(landmarks.length + outliers.length === chunks, `${p}.landmarkIds`, `and outlierIds must cover the ${chunks} chunks, got ${landmarks.length} + ${outliers.length}`);
    stored(hs.landmarks, `${p}.landmarks`, dtype, landmarks.length * d);
    const selected = ids(hs.selected, `${p}.selected`, Math.min(maxSelected, landmarks.length), chunks, false);
    const isLandmark = new Set(landmarks);
    selected.forEach((c, i) => need(isLandmark.has(c), `${p}.selected[${i}]`, `is chunk ${c}, which is not a landmark chunk`));
    stored(hs.selectedK, `${p}.selectedK`, dtype, selected.length * C * d);
    stored(hs.selectedV, `${p}.selectedV`, dtype, selected.length * C * d);
  });
  return o as unknown as StoreSnapshot;
}
