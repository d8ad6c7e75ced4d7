import { at, type Device, type DeviceBuffer, type PagedBuffer, type View } from '../../backends/Device.js';
import { COUNTERS, HEAD_FIELDS, type StepGeometry } from '../../backends/LayerStep.js';
import type { ResolvedShadowKVOptions } from '../../config.js';
import type { ResolvedSpec } from '../../spec.js';
import type { SequenceState } from '../BaseKVCache.js';
import { storeChunks } from '../capacity.js';
import { boundLandmarks, compactRow, pageView, storeValues } from '../decodeLayer.js';
import { range } from '../range.js';
import { NonFiniteError } from '../../errors/NonFiniteError.js';
import { OutOfMemoryError } from '../../errors/OutOfMemoryError.js';
import { MAX_FINITE } from '../validate.js';
import { CompressedStore, storeGeometry } from './CompressedStore.js';
import type { HostPages } from './HostPages.js';

/** What compression needs from its cache. */
export interface CompressContext {
  device: Device;
  spec: ResolvedSpec;
  options: ResolvedShadowKVOptions;
  geometry: StepGeometry;
  /** Where stores take their host pages from. */
  pages: HostPages;
  /** The cache's maxTokens, which bounds what a store is first sized for (storeChunks). */
  maxTokens: number;
  /** The chunks a store holds at the cache's maxTokens (storeChunks): no store grows past it. */
  maxChunks: number;
}

// NOTE: a fixed seed makes the factorization, and so every output, reproducible run to run.
const SVD_SEED = 0x5eed;

/**
 * Benchmarks: `end`, when set, is called with each stage's name as the stage ends, in `buildStore`
 * and `commitStore` (bench/gpu with SKV_BENCH_STAGES=1 synchronizes there and times them).
 */
export const compressStages: { end?: (stage: string) => void } = {};

const stage = (name: string) => compressStages.end?.(name);

/** An empty compressed store with room for `chunks` chunks (plus compaction headroom), at rank `rank`. */
export function newStore(ctx: CompressContext, rank: number, chunks: number): CompressedStore {
  const { options: o, spec } = ctx;
  return new CompressedStore(ctx.device, storeGeometry(o, spec, ctx.geometry.dtype, rank), storeChunks(chunks, o, ctx.maxTokens), ctx.pages, ctx.maxChunks);
}

/**
 * Pre-RoPE keys of the tail's first `n` rows, heads concatenated: `[n, Hkv*d]` f32 (temporary).
 * The tail holds post-RoPE keys; RoPE is undone at their positions `0..n`.
 */
function preRopeKeys(ctx: CompressContext, st: SequenceState, n: number): DeviceBuffer {
  const { device, spec, geometry } = ctx;
  const { kvHeads: Hkv, headDim: d } = spec;
  const D = Hkv * d;
  const k = device.alloc(n * D, 'f32', 'compress');
  stage('allocKeys');
  device.preRopeKeys(at(k), D, st.tail.headK(0), st.tail.capacity * d, Hkv, n, d, geometry.invFreq, geometry.ropeStyle, 0);
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
  // The temporaries (pre-RoPE keys, factors), freed on every path: an allocation that fails frees
  // those before it, and the store. Work started alongside is joined first, on every path.
  const temps: DeviceBuffer[] = [];
  const temp = (buf: DeviceBuffer) => (temps.push(buf), buf);
  const joins: (() => void)[] = [];
  let store: CompressedStore | undefined;
  try {
    const k = temp(preRopeKeys(ctx, st, nc));
    stage('preRopeKeys');
    // 1. Low-rank keys: K_pre [nc, Hkv*d] ≈ U · SV. Started first: where the device can, it runs
    //    alongside steps 2-4 (which only read the tail), its chain of host round trips leaving the
    //    GPU and this thread to them.
    const f = { u: temp(device.alloc(nc * rank, 'f32', 'compress')), sv: temp(device.alloc(rank * D, 'f32', 'compress')), proj: temp(device.alloc(D * rank, 'f32', 'compress')), sigma: temp(device.alloc(rank, 'f32', 'compress')) };
    stage('allocFactors');
    const args = [at(k), nc, D, rank, o.svdOversample, o.svdPowerIters, SVD_SEED, { u: at(f.u), sv: at(f.sv), proj: at(f.proj), sigma: at(f.sigma) }] as const;
    joins.push(device.lowRankKeysAlongside ? device.lowRankKeysAlongside(...args) : (device.lowRankKeys(...args), () => {}));
    store = newStore(ctx, rank, chunks);
    stage('store');
    // 2. Values go to the host pages, chunk-contiguous: one copy per page; where the device can,
    //    alongside the rest, the copy engines working while the kernels compute.
    joins.push(copyValues(ctx, st, store, chunks));
    stage('values');
    // 3-4. Landmarks; the lowest min-cosine chunks (and sink chunks) stay exact as outliers.
    const counts = landmarksAndOutliers(ctx, st, store, chunks);
    stage('landmarks');
    joinAll(joins);
    stage('join');
    checkBasisRange(ctx, f.sigma, rank);
    device.convert(at(store.u), at(f.u), nc * rank);
    device.convert(at(store.sv), at(f.sv), rank * D);
    device.convert(at(store.proj), at(f.proj), D * rank);
    device.write(at(store.headCounts), counts);
    boundLandmarks(device, store, Hkv, d);
    stage('convert');
  } catch (err) {
    try {
      joinAll(joins);
    } catch {
      // NOTE: err, the first failure, is the one reported
    }
    store?.free();
    throw err;
  } finally {
    temps.forEach((b) => device.free(b));
  }
  store.tokens = nc;
  return store;
}

/**
 * Refuses a factorization whose basis the store cannot hold: SV = Σ Vᵀ is stored in the storage
 * dtype, and its entries reach the largest singular value, which keys within their per-element limit
 * can still take past it (up to sqrt(rows x columns) times that limit: f16's 65504 at |k| ~ 10^4 over
 * a few hundred tokens). Stored, it would be Infinity, and every output of the row NaN.
 */
function checkBasisRange(ctx: CompressContext, sigma: DeviceBuffer, rank: number): void {
  const dtype = ctx.geometry.dtype;
  const top = ctx.device.read(at(sigma) as View & { buf: { dtype: 'f32' } }, rank).reduce((m, x) => (Math.abs(x) > m || Number.isNaN(x) ? Math.abs(x) : m), 0);
  if (top <= MAX_FINITE[dtype]) return;
  throw new NonFiniteError(
    `compress: the keys' low-rank basis reaches ${top.toPrecision(4)} (their largest singular value), past what '${dtype}' storage holds (${MAX_FINITE[dtype]}); the row stays exact and uncompressed: store keys as ${dtype === 'f16' ? "'bf16' or 'f32'" : "'f32'"}, or scale them down`,
  );
}

/** Joins each piece of work started alongside, every one even where one before it throws; throws the first error. */
function joinAll(joins: (() => void)[]): void {
  let failed: { err: unknown } | undefined;
  for (const join of joins.splice(0)) {
    try {
      join();
    } catch (err) {
      failed ??= { err };
    }
  }
  if (failed) throw failed.err;
}

/** The copies of step 2, issued alongside what follows where the device can; returns their join. */
function copyValues(ctx: CompressContext, st: SequenceState, store: CompressedStore, chunks: number): () => void {
  const { device, options: o } = ctx;
  const { kvHeads: Hkv, headDim: d } = ctx.spec;
  const C = o.chunkSize;
  const copies: { dst: View; src: View; length: number; c: number; h: number }[] = [];
  for (let h = 0; h < Hkv; h++) {
    for (let c = 0; c < chunks; c += o.hostPageChunks - (c % o.hostPageChunks)) {
      const run = Math.min(o.hostPageChunks - (c % o.hostPageChunks), chunks - c);
      copies.push({ dst: pageView(store, c, h), src: st.tail.headV(h, c * C), length: run * C * d, c, h });
    }
  }
  if (o.fp8Values || o.packedValues) {
    copies.forEach((r) => storeValues(device, store, r.c, r.h, r.src, r.length / (C * d)));
    return () => {};
  }
  if (device.copyAlongside) return device.copyAlongside(copies);
  copies.forEach((c) => device.copy(c.dst, c.src, c.length));
  return () => {};
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
  stage('commit');
}

/**
 * Landmarks of every head's chunks, its outliers copied exact and left out of the landmark set;
 * returns the per-head counts `[Hkv, HEAD_FIELDS]`. Batched across heads: every head's landmarks
 * are computed, then the kept ones converted to the storage dtype with their ids (keepLandmarks),
 * the outliers' key and value rows of all heads gathered from the tail, in one op each. Only the
 * outlier choice (one selectChunks for every head) waits for the device.
 */
function landmarksAndOutliers(ctx: CompressContext, st: SequenceState, store: CompressedStore, chunks: number): Int32Array {
  const { device, options: o } = ctx;
  const { kvHeads: Hkv, headDim: d } = ctx.spec;
  const { C, maxOutliers, dtype } = store.geometry;
  const counts = new Int32Array(Hkv * HEAD_FIELDS);
  const temps: DeviceBuffer[] = [];
  const temp = <T extends DeviceBuffer>(buf: T) => (temps.push(buf), buf);
  try {
    const lm = temp(device.alloc(Hkv * chunks * d, 'f32', 'compress')); // head h's landmarks from row h * chunks
    const minCos = temp(device.alloc(Hkv * chunks, 'f32', 'compress'));
    for (let h = 0; h < Hkv; h++) device.landmarks(st.tail.headK(h), d, chunks, C, d, at(lm, h * chunks * d), at(minCos, h * chunks));
    stage('landmarks: launch');
    // The tail's keys and values as gatherValues' "chunks" of one row.
    const tail = [st.tail.k, st.tail.v];
    const tailRows: PagedBuffer = { pageChunks: st.tail.k.length / d, block: d, heads: 2, dtype, pages: tail, table: temp(device.pointerTable(tail, 'compress')) };
    const sinks = range(0, Math.min(Math.ceil(o.sinkTokens / C), chunks));
    const outlierIds = new Int32Array(Hkv * maxOutliers);
    const outlierCounts = new Int32Array(Hkv);
    const rows: number[] = []; // tail rows of every head's outliers ...
    const slots: number[] = []; // ... and their rows in outlierK / outlierV
    // Every head's lowest min-cosines in one select (one wait on CUDA, not one a head).
    const lowestAll = device.selectChunks(at(minCos), chunks, o.outlierChunks, false, Hkv);
    const m = lowestAll.length / Hkv;
    for (let h = 0; h < Hkv; h++) {
      const lowest = lowestAll.subarray(h * m, (h + 1) * m);
      const outliers = Int32Array.from(new Set([...lowest, ...sinks])).sort();
      outlierIds.set(outliers, h * maxOutliers);
      outlierCounts[h] = outliers.length;
      outliers.forEach((c, i) => {
        for (let t = 0; t < C; t++) rows.push(h * st.tail.capacity + c * C + t), slots.push((h * maxOutliers + i) * C + t);
      });
      // The landmark set keeps every other chunk, in order (keepLandmarks).
      counts.set([chunks - outliers.length, outliers.length, 0], h * HEAD_FIELDS);
    }
    stage('landmarks: select');
    device.write(at(store.outlierIds), outlierIds);
    device.keepLandmarks(at(lm), Hkv, chunks, d, outlierIds, outlierCounts, maxOutliers, at(store.landmarks), at(store.landmarkIds), store.chunkCapacity);
    if (rows.length) {
      const [ids, to] = [Int32Array.from(rows), Int32Array.from(slots)];
      device.gatherValues(at(store.outlierK), tailRows, 0, ids, to);
      device.gatherValues(at(store.outlierV), tailRows, 1, ids, to);
    }
    stage('landmarks: gathers');
    return counts;
  } finally {
    temps.forEach((b) => device.free(b));
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
  compactRow(device, ctx.geometry, st.tail, store, st.tail.count, heads, c); // writes the counts and the bounds
  device.write(at(counters), c);
  const n = m * o.chunkSize;
  st.tail.shifted(n);
  store.tokens += n;
  return n;
}
