import { at, fp8ChunkBytes, packIndex, type Device, type DeviceBuffer, type Segment, type View } from '../backends/Device.js';
import { COUNTER, COUNTERS, HEAD_FIELD, HEAD_FIELDS, type LayerStep, type SparseHandles, type StepGeometry, type StepRow, type TailHandles } from '../backends/LayerStep.js';
import { range } from './range.js';
import { hotSlots, reuseSlots } from './reuseSlots.js';

/** Per-row f32 temporaries of a composed step. */
interface Temps {
  q: DeviceBuffer; // [Hq, d] post-RoPE query
  k: DeviceBuffer; // [Hkv, d] post-RoPE key
  out: DeviceBuffer; // [Hq, d]
}

const filled = (n: number, value: number) => new Int32Array(n).fill(value);

/**
 * Decode steps 1-5 of docs/algorithm.md for every row of a layer, composed from the device's
 * fine-grained ops: the reference that `Device.decodeLayer` (one runtime call) must match bit for
 * bit. Reads and writes the same state handles, counters included.
 */
export function decodeLayerComposed(device: Device, step: LayerStep): void {
  const { queryHeads: Hq, kvHeads: Hkv, headDim: d } = step.geometry;
  const counters = device.read(at(step.counters) as View & { buf: { dtype: 'f64' } }, COUNTERS);
  counters.fill(0, COUNTER.lastHits, COUNTERS);
  counters[COUNTER.steps]! += 1;
  const t: Temps = { q: device.scratch('composed.q', Hq * d, 'f32'), k: device.scratch('composed.k', Hkv * d, 'f32'), out: device.scratch('composed.out', Hq * d, 'f32') };
  for (const row of step.rows) {
    if (row.input < 0) continue;
    const count = appendToken(device, step, row, t);
    const heads = row.store ? device.read(at(row.store.headCounts) as View & { buf: { dtype: 'i32' } }, Hkv * HEAD_FIELDS) : undefined;
    for (let h = 0; h < Hkv; h++) attendHead(device, step, row, h, count, t, heads, counters);
    device.convert(at(step.out.buf, step.out.offset + row.input * Hq * d), at(t.out), Hq * d);
    if (row.compact && row.store && heads) compactRow(device, step.geometry, row.tail, row.store, count, heads, counters);
    if (heads) device.write(at(row.store!.headCounts), heads);
  }
  device.write(at(step.counters), counters);
}

/** 1. q and k to f32 with RoPE at the row's position; k and v appended to the tail. Returns the tail count. */
export function appendToken(device: Device, step: LayerStep, row: StepRow, t: Temps): number {
  const { queryHeads: Hq, kvHeads: Hkv, headDim: d, invFreq, ropeStyle } = step.geometry;
  const { tail } = row;
  device.convert(at(t.q), at(step.q.buf, step.q.offset + row.input * Hq * d), Hq * d);
  device.rope(at(t.q), Hq, d, d, filled(Hq, row.position), invFreq, ropeStyle, 1);
  device.convert(at(t.k), at(step.k.buf, step.k.offset + row.input * Hkv * d), Hkv * d);
  device.rope(at(t.k), Hkv, d, d, filled(Hkv, row.position), invFreq, ropeStyle, 1);
  for (let h = 0; h < Hkv; h++) {
    device.convert(at(tail.k, (h * tail.capacity + tail.count) * d), at(t.k, h * d), d);
    device.convert(at(tail.v, (h * tail.capacity + tail.count) * d), at(step.v.buf, step.v.offset + (row.input * Hkv + h) * d), d);
  }
  return tail.count + 1;
}

/** 2-5 for kv head h: a dense row attends its tail; a compressed row scores, selects, reuses, fetches, rebuilds, then attends. */
function attendHead(device: Device, step: LayerStep, row: StepRow, h: number, count: number, t: Temps, heads: Int32Array | undefined, counters: Float64Array): void {
  const { queryHeads: Hq, kvHeads: Hkv, headDim: d, scale } = step.geometry;
  const g = Hq / Hkv;
  const { tail, store } = row;
  const tailSegment: Segment = { k: at(tail.k, h * tail.capacity * d), v: at(tail.v, h * tail.capacity * d), n: count, ld: d };
  const segments = store && heads ? [...sparseSegments(device, step, store, h, at(t.q, h * g * d), heads, counters), tailSegment] : [tailSegment];
  device.sparseAttention(at(t.q, h * g * d), g, d, scale, segments, at(t.out, h * g * d), step.rows.length * Hkv); // split as the fused step splits
  const attended = segments.reduce((n, s) => n + s.n, 0);
  add(counters, 'attendedTokens', attended);
  add(counters, 'heads', 1);
}

/** 2-4 for kv head h of a compressed row; returns its outlier and selected segments. */
function sparseSegments(device: Device, step: LayerStep, s: SparseHandles, h: number, q: View, heads: Int32Array, counters: Float64Array): Segment[] {
  const { queryHeads: Hq, kvHeads: Hkv, headDim: d, chunkSize: C, maxSelected, maxOutliers, scoreScale } = step.geometry;
  const g = Hq / Hkv;
  const block = C * d;
  const L = heads[h * HEAD_FIELDS + HEAD_FIELD.landmarks]!;
  const O = heads[h * HEAD_FIELDS + HEAD_FIELD.outliers]!;
  let held = heads[h * HEAD_FIELDS + HEAD_FIELD.selected]!;
  // 2. Score: softmax(q · L · scoreScale) per query head, max over the GQA group.
  const scores = device.scratch('composed.scores', L, 'f32');
  device.scoreChunks(q, g, d, scoreScale, at(s.landmarks, h * s.chunkCapacity * d), L, at(scores));
  // 3. Select the top maxSelected chunks (ties: lower chunk id).
  const landmarkIds = device.read(at(s.landmarkIds, h * s.chunkCapacity) as View & { buf: { dtype: 'i32' } }, L);
  const ids = device.selectChunks(at(scores), L, maxSelected, true).map((i) => landmarkIds[i]!);
  // 4. Reuse last step's slots; fetch V and rebuild K only for misses.
  const selected = device.read(at(s.selectedIds, h * maxSelected) as View & { buf: { dtype: 'i32' } }, maxSelected);
  if (ids.length < held) {
    selected.fill(-1);
    held = 0;
  }
  const plan = reuseSlots(selected, held, ids);
  device.write(at(s.selectedIds, h * maxSelected), selected);
  heads[h * HEAD_FIELDS + HEAD_FIELD.selected] = ids.length;
  const selK = at(s.selectedK, h * maxSelected * block);
  const selV = at(s.selectedV, h * maxSelected * block);
  if (plan.missIds.length) {
    fetchValues(device, s, h, block, plan.missIds, plan.missSlots, selV, counters);
    device.rebuildKeys({
      u: at(s.u), rank: s.rank, sv: at(s.sv, h * d), ldsv: Hkv * d, d,
      chunkIds: plan.missIds, slots: plan.missSlots, C, invFreq: step.geometry.invFreq, style: step.geometry.ropeStyle, out: selK, ldo: d,
    });
  }
  add(counters, 'hits', plan.hits);
  add(counters, 'misses', plan.missIds.length);
  add(counters, 'selectedTokens', ids.length * C);
  const outliers = h * maxOutliers * block;
  return [
    { k: at(s.outlierK, outliers), v: at(s.outlierV, outliers), n: O * C, ld: d },
    { k: selK, v: selV, n: ids.length * C, ld: d },
  ];
}

/**
 * 4, values: the misses' chunks into their slots, from the hot-value cache where it holds them and
 * from the host pages otherwise; fetched chunks then enter the cache (`hotSlots`).
 */
function fetchValues(device: Device, s: SparseHandles, h: number, block: number, ids: Int32Array, slots: Int32Array, selV: View, counters: Float64Array): void {
  if (!s.hot) {
    device.gatherValues(selV, s.values, h, ids, slots);
    return;
  }
  const { slots: P, v } = s.hot;
  const hot = device.read(at(s.hot.ids, h * P) as View & { buf: { dtype: 'i32' } }, P);
  const codes = hotSlots(hot, ids);
  const fetched = range(0, ids.length).filter((i) => codes[i]! < 0);
  if (fetched.length) device.gatherValues(selV, s.values, h, Int32Array.from(fetched, (i) => ids[i]!), Int32Array.from(fetched, (i) => slots[i]!));
  const slotView = (i: number) => at(selV.buf, selV.offset + slots[i]! * block);
  codes.forEach((code, i) => {
    if (code >= 0) device.copy(slotView(i), at(v, (h * P + code) * block), block);
    else if (code <= -2) device.copy(at(v, (h * P - 2 - code) * block), slotView(i), block);
  });
  device.write(at(s.hot.ids, h * P), hot);
  add(counters, 'hotHits', ids.length - fetched.length);
}

/**
 * Compaction after the step: the tail's oldest whole chunks beyond the local window join the store
 * (keys projected onto the basis, values to the host pages, landmarks appended, the counts written
 * and the landmark bounds with them, the tail shifted).
 */
export function compactRow(device: Device, geometry: StepGeometry, tail: TailHandles, s: SparseHandles, count: number, heads: Int32Array, counters: Float64Array): void {
  const { kvHeads: Hkv, headDim: d, chunkSize: C, localTokens, invFreq, ropeStyle } = geometry;
  const m = Math.floor((count - localTokens) / C);
  if (m <= 0) return;
  const n = m * C;
  const D = Hkv * d;
  const first = s.tokens / C;
  // Keys: U_new = K_pre · proj, K_pre being the tail's keys with RoPE undone, heads concatenated.
  const k = device.scratch('composed.kpre', n * D, 'f32');
  const u = device.scratch('composed.unew', n * s.rank, 'f32');
  const positions = range(s.tokens, n);
  for (let h = 0; h < Hkv; h++) {
    device.convertRows(at(k, h * d), D, at(tail.k, h * tail.capacity * d), d, n, d);
    device.rope(at(k, h * d), n, d, D, positions, invFreq, ropeStyle, -1);
  }
  device.gemm({ M: n, N: s.rank, K: D, a: at(k), lda: D, b: at(s.proj), ldb: s.rank, c: at(u), ldc: s.rank });
  device.convert(at(s.u, s.tokens * s.rank), at(u), n * s.rank);
  const lm = device.scratch('composed.landmarks', m * d, 'f32');
  const minCos = device.scratch('composed.mincos', m, 'f32');
  for (let h = 0; h < Hkv; h++) {
    // Values to the host pages, chunk by chunk; landmarks and ids appended.
    for (let i = 0; i < m; i++) storeValues(device, s, first + i, h, at(tail.v, (h * tail.capacity + i * C) * d), 1);
    const L = heads[h * HEAD_FIELDS + HEAD_FIELD.landmarks]!;
    device.landmarks(at(tail.k, h * tail.capacity * d), d, m, C, d, at(lm), at(minCos));
    device.convert(at(s.landmarks, (h * s.chunkCapacity + L) * d), at(lm), m * d);
    device.write(at(s.landmarkIds, h * s.chunkCapacity + L), range(first, m));
    heads[h * HEAD_FIELDS + HEAD_FIELD.landmarks] = L + m;
  }
  device.write(at(s.headCounts), heads);
  boundLandmarks(device, s, Hkv, d);
  for (let h = 0; h < Hkv; h++) {
    device.copy(at(tail.k, h * tail.capacity * d), at(tail.k, (h * tail.capacity + n) * d), (count - n) * d);
    device.copy(at(tail.v, h * tail.capacity * d), at(tail.v, (h * tail.capacity + n) * d), (count - n) * d);
  }
  add(counters, 'compactions', 1);
}

/**
 * Each head's landmark bound from its landmarks, where the device keeps one (Device.landmarkBounds):
 * after the host wrote landmarks or their counts to the device. The fused step's own compaction
 * raises it itself.
 */
export function boundLandmarks(device: Device, s: SparseHandles, Hkv: number, d: number): void {
  device.landmarkBounds?.(at(s.landmarks), Hkv, s.chunkCapacity, d, at(s.headCounts));
}

/** Where chunk c of head h lives in a store's host pages (a word offset where they hold fp8). */
export function pageView(s: Pick<SparseHandles, 'values'>, c: number, h: number): View {
  const p = s.values;
  const stride = p.fp8Rows ? fp8ChunkBytes(p.fp8Rows, p.block / p.fp8Rows) / 4 : p.block;
  return at(p.pages[Math.floor(c / p.pageChunks) * p.heads + h]!, (c % p.pageChunks) * stride);
}

/** `chunks` chunks of values from `src` to the host pages from chunk c of head h on (one page): copied, or quantized or packed where the pages hold fp8 or packed chunks. */
export function storeValues(device: Device, s: Pick<SparseHandles, 'values'>, c: number, h: number, src: View, chunks: number): void {
  const p = s.values;
  if (p.bases) return device.packValues!(pageView(s, c, h), src, chunks, p.block, p.bases, packIndex(p, h, c));
  if (!p.fp8Rows) return device.copy(pageView(s, c, h), src, chunks * p.block);
  device.quantizeValues!(pageView(s, c, h), src, chunks, p.fp8Rows, p.block / p.fp8Rows);
}

/** Adds to a counter and its `last*` twin. */
function add(counters: Float64Array, name: 'hits' | 'misses' | 'hotHits' | 'selectedTokens' | 'attendedTokens' | 'heads' | 'compactions', n: number): void {
  counters[COUNTER[name]]! += n;
  const last = `last${name[0]!.toUpperCase()}${name.slice(1)}` as keyof typeof COUNTER;
  if (last in COUNTER) counters[COUNTER[last]]! += n;
}
