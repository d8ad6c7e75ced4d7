import { at, type Device, type DeviceBuffer, type View } from '../../backends/Device.js';
import { COUNTERS, HEAD_FIELDS, type StepGeometry } from '../../backends/LayerStep.js';
import type { ResolvedShadowKVOptions } from '../../config.js';
import type { ResolvedSpec } from '../../spec.js';
import type { SequenceState } from '../BaseKVCache.js';
import { storeChunks } from '../capacity.js';
import { compactRow, pageView } from '../decodeLayer.js';
import { OutOfMemoryError } from '../../errors/OutOfMemoryError.js';
import { CompressedStore } from './CompressedStore.js';

/** What compression needs from its cache. */
export interface CompressContext {
  device: Device;
  spec: ResolvedSpec;
  options: ResolvedShadowKVOptions;
  geometry: StepGeometry;
}

// NOTE: a fixed seed makes the factorization, and so every output, reproducible run to run.
const SVD_SEED = 0x5eed;

/** Outlier slots per kv head: the outliers, plus the sink chunks on top of them. */
export const maxOutliers = (o: ResolvedShadowKVOptions) => o.outlierChunks + Math.ceil(o.sinkTokens / o.chunkSize);

/** An empty compressed store with room for `chunks` chunks (plus compaction headroom), at rank `rank`. */
export function newStore(ctx: CompressContext, rank: number, chunks: number): CompressedStore {
  const { options: o, spec } = ctx;
  const geometry = {
    heads: spec.kvHeads, d: spec.headDim, C: o.chunkSize, rank, dtype: ctx.geometry.dtype,
    maxOutliers: maxOutliers(o), maxSelected: o.budget / o.chunkSize, pageChunks: o.hostPageChunks,
  };
  return new CompressedStore(ctx.device, geometry, storeChunks(chunks, o));
}

const range = (from: number, n: number) => Int32Array.from({ length: n }, (_, i) => from + i);

/**
 * Pre-RoPE keys of the tail's first `n` rows, heads concatenated: `[n, Hkv*d]` f32 (temporary).
 * The tail holds post-RoPE keys; RoPE is undone at their positions `0..n`.
 */
function preRopeKeys(ctx: CompressContext, st: SequenceState, n: number): DeviceBuffer {
  const { device, spec, geometry } = ctx;
  const { kvHeads: Hkv, headDim: d } = spec;
  const D = Hkv * d;
  const k = device.alloc(n * D, 'f32', 'compress');
  for (let h = 0; h < Hkv; h++) {
    device.convertRows(at(k, h * d), D, st.tail.headK(h), d, n, d);
    device.rope(at(k, h * d), n, d, D, range(0, n), geometry.invFreq, geometry.ropeStyle, -1);
  }
  return k;
}

/**
 * First compression of a dense sequence (docs/algorithm.md): low-rank pre-RoPE keys of the whole
 * prompt, values to the host pages, landmarks, outliers. Reads the row, changes nothing in it:
 * `commitStore` then hands the compressed tokens over. Needs at least one whole chunk beyond the local window.
 */
export function buildStore(ctx: CompressContext, st: SequenceState): CompressedStore {
  const { device, spec, options: o } = ctx;
  const { kvHeads: Hkv, headDim: d } = spec;
  const C = o.chunkSize;
  const nc = Math.floor((st.length - o.localTokens) / C) * C;
  const D = Hkv * d;
  const chunks = nc / C;
  const rank = Math.min(o.rank, nc);
  const store = newStore(ctx, rank, chunks);
  try {
    // 1. Low-rank keys: K_pre [nc, Hkv*d] ≈ U · SV.
    const k = preRopeKeys(ctx, st, nc);
    const f = { u: device.alloc(nc * rank, 'f32', 'compress'), sv: device.alloc(rank * D, 'f32', 'compress'), proj: device.alloc(D * rank, 'f32', 'compress'), sigma: device.alloc(rank, 'f32', 'compress') };
    try {
      device.lowRankKeys(at(k), nc, D, rank, o.svdOversample, o.svdPowerIters, SVD_SEED, { u: at(f.u), sv: at(f.sv), proj: at(f.proj), sigma: at(f.sigma) });
      device.convert(at(store.u), at(f.u), nc * rank);
      device.convert(at(store.sv), at(f.sv), rank * D);
      device.convert(at(store.proj), at(f.proj), D * rank);
    } finally {
      [k, f.u, f.sv, f.proj, f.sigma].forEach((b) => device.free(b));
    }
    const counts = new Int32Array(Hkv * HEAD_FIELDS);
    for (let h = 0; h < Hkv; h++) {
      // 2. Values go to the host pages, chunk-contiguous.
      for (let c = 0; c < chunks; c += o.hostPageChunks - (c % o.hostPageChunks)) {
        const run = Math.min(o.hostPageChunks - (c % o.hostPageChunks), chunks - c);
        device.copy(pageView(store, c, h), st.tail.headV(h, c * C), run * C * d);
      }
      // 3-4. Landmarks; the lowest min-cosine chunks (and sink chunks) stay exact as outliers.
      const [L, O] = landmarksAndOutliers(ctx, st, store, h, chunks);
      counts.set([L, O, 0], h * HEAD_FIELDS);
    }
    device.write(at(store.headCounts), counts);
  } catch (err) {
    store.free();
    throw err;
  }
  store.tokens = nc;
  return store;
}

/** 5. The row keeps only its local window exact; the store holds the rest. */
export function commitStore(ctx: CompressContext, st: SequenceState & { store?: CompressedStore }, store: CompressedStore): void {
  const o = ctx.options;
  st.tail.drop(store.tokens);
  st.store = store;
  try {
    st.tail.fit(o.localTokens + o.maxRecentTokens + o.chunkSize);
  } catch (err) {
    // NOTE: shrinking is an optimization; out of memory for the smaller copy keeps the larger buffers.
    if (!(err instanceof OutOfMemoryError)) throw err;
  }
}

/** Landmarks of head h's chunks, its outliers copied exact and left out of the landmark set; returns both counts. */
function landmarksAndOutliers(ctx: CompressContext, st: SequenceState, store: CompressedStore, h: number, chunks: number): [number, number] {
  const { device, options: o } = ctx;
  const { headDim: d } = ctx.spec;
  const C = o.chunkSize;
  const block = C * d;
  const lm = device.alloc(chunks * d, 'f32', 'compress');
  const minCos = device.alloc(chunks, 'f32', 'compress');
  try {
    device.landmarks(st.tail.headK(h), d, chunks, C, d, at(lm), at(minCos));
    const lowest = device.selectChunks(at(minCos), chunks, o.outlierChunks, false);
    const sinks = range(0, Math.min(Math.ceil(o.sinkTokens / C), chunks));
    const outliers = Int32Array.from(new Set([...lowest, ...sinks])).sort();
    const slot = h * store.geometry.maxOutliers;
    outliers.forEach((c, i) => {
      device.copy(at(store.outlierK, (slot + i) * block), st.tail.headK(h, c * C), block);
      device.copy(at(store.outlierV, (slot + i) * block), st.tail.headV(h, c * C), block);
    });
    device.write(at(store.outlierIds, slot), outliers);
    // The landmark set keeps every other chunk, ascending: each run between two outliers in one conversion.
    const base = h * store.chunkCapacity;
    let kept = 0;
    for (let c = 0, i = 0; c < chunks; ) {
      const end = i < outliers.length ? outliers[i]! : chunks;
      if (end > c) {
        device.convert(at(store.landmarks, (base + kept) * d), at(lm, c * d), (end - c) * d);
        device.write(at(store.landmarkIds, base + kept), range(c, end - c));
        kept += end - c;
      }
      c = end + 1;
      i += 1;
    }
    return [kept, outliers.length];
  } finally {
    device.free(lm);
    device.free(minCos);
  }
}

/**
 * Compaction outside a decode step (after a continuation prefill): the tail's whole chunks beyond
 * the local window join the store, as the step does it. Returns the tokens moved.
 */
export function compactSequence(ctx: CompressContext, st: SequenceState, store: CompressedStore, counters: DeviceBuffer): number {
  const { device, options: o } = ctx;
  const m = Math.floor((st.tail.count - o.localTokens) / o.chunkSize);
  if (m <= 0) return 0;
  store.reserveChunks(store.tokens / o.chunkSize + m);
  const heads = store.headCountsNow();
  const c = device.read(at(counters) as View & { buf: { dtype: 'f64' } }, COUNTERS);
  compactRow(device, ctx.geometry, st.tail, store, st.tail.count, heads, c);
  device.write(at(store.headCounts), heads);
  device.write(at(counters), c);
  const n = m * o.chunkSize;
  st.tail.count -= n;
  store.tokens += n;
  return n;
}
