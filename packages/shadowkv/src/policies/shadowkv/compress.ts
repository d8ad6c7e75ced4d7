import { at, type Device, type DeviceBuffer } from '../../backends/Device.js';
import type { ResolvedShadowKVOptions } from '../../config.js';
import type { ResolvedSpec } from '../../spec.js';
import type { DType } from '../../tensor.js';
import type { SequenceState } from '../BaseKVCache.js';
import { CompressedStore } from './CompressedStore.js';

/** What compression needs from its cache. */
export interface CompressContext {
  device: Device;
  spec: ResolvedSpec;
  options: ResolvedShadowKVOptions;
  dtype: DType;
  invFreq: DeviceBuffer;
  ropeStyle: number;
}

// NOTE: a fixed seed makes the factorization, and so every output, reproducible run to run.
const SVD_SEED = 0x5eed;

/** An empty compressed store for `chunks` chunks at rank `rank`, sized by the options. */
export function newStore(ctx: CompressContext, rank: number, chunks: number): CompressedStore {
  const { options: o, spec } = ctx;
  const C = o.chunkSize;
  const geometry = {
    heads: spec.kvHeads, d: spec.headDim, C, rank, dtype: ctx.dtype,
    maxOutliers: o.outlierChunks + Math.ceil(o.sinkTokens / C), // sink chunks come on top of the outliers
    maxSelected: o.budget / C,
  };
  return new CompressedStore(ctx.device, geometry, chunks);
}

const range = (from: number, n: number) => Int32Array.from({ length: n }, (_, i) => from + i);

/**
 * Pre-RoPE keys of the tail's first `n` rows, heads concatenated: `[n, Hkv*d]` f32 (temporary).
 * The tail holds post-RoPE keys; RoPE is undone at their positions `first + t`.
 */
function preRopeKeys(ctx: CompressContext, st: SequenceState, n: number, first: number): DeviceBuffer {
  const { device, spec } = ctx;
  const { kvHeads: Hkv, headDim: d } = spec;
  const D = Hkv * d;
  const k = device.alloc(n * D, 'f32', 'compress');
  for (let h = 0; h < Hkv; h++) {
    device.convertRows(at(k, h * d), D, st.tail.headK(h), d, n, d);
    device.rope(at(k, h * d), n, d, D, range(first, n), ctx.invFreq, ctx.ropeStyle, -1);
  }
  return k;
}

/** Landmarks (chunk means of post-RoPE keys) of the tail's first `chunks` chunks of head h into the store, ids from `firstChunk`. */
function addLandmarks(ctx: CompressContext, st: SequenceState, store: CompressedStore, h: number, chunks: number, firstChunk: number) {
  const { device } = ctx;
  const { headDim: d } = ctx.spec;
  const C = ctx.options.chunkSize;
  const lm = device.alloc(chunks * d, 'f32', 'compress');
  const minCos = device.alloc(chunks, 'f32', 'compress');
  device.landmarks(st.tail.headK(h), d, chunks, C, d, at(lm), at(minCos));
  const hs = store.heads[h]!;
  device.convert(at(store.landmarks, (h * store.chunkCapacity + hs.landmarkCount) * d), at(lm), chunks * d);
  for (let c = 0; c < chunks; c++) hs.landmarkIds[hs.landmarkCount++] = firstChunk + c;
  return { lm, minCos, release: () => [lm, minCos].forEach((b) => device.free(b)) };
}

/**
 * First compression of a dense sequence (docs/algorithm.md): low-rank pre-RoPE keys, values to
 * the host, landmarks, outliers; the tail keeps the local window.
 */
export function compressSequence(ctx: CompressContext, st: SequenceState): CompressedStore | undefined {
  const { device, spec, options: o } = ctx;
  const { kvHeads: Hkv, headDim: d } = spec;
  const C = o.chunkSize;
  const nc = Math.floor((st.length - o.localTokens) / C) * C;
  if (nc <= 0) return undefined;
  const D = Hkv * d;
  const chunks = nc / C;
  const rank = Math.min(o.rank, nc, D);
  const sinkChunks = Math.ceil(o.sinkTokens / C);
  const store = newStore(ctx, rank, chunks);

  // 1. Low-rank keys: K_pre [nc, Hkv*d] ≈ U · SV.
  const k = preRopeKeys(ctx, st, nc, 0);
  const f = { u: device.alloc(nc * rank, 'f32', 'compress'), sv: device.alloc(rank * D, 'f32', 'compress'), proj: device.alloc(D * rank, 'f32', 'compress'), sigma: device.alloc(rank, 'f32', 'compress') };
  try {
    device.lowRankKeys(at(k), nc, D, rank, o.svdOversample, o.svdPowerIters, SVD_SEED, { u: at(f.u), sv: at(f.sv), proj: at(f.proj), sigma: at(f.sigma) });
    device.convert(at(store.u), at(f.u), nc * rank);
    device.convert(at(store.sv), at(f.sv), rank * D);
    device.convert(at(store.proj), at(f.proj), D * rank);
  } finally {
    [k, f.u, f.sv, f.proj, f.sigma].forEach((b) => device.free(b));
  }

  for (let h = 0; h < Hkv; h++) {
    // 2. Values go to the host, chunk-contiguous.
    device.offload(store.values, h * store.chunkCapacity * C * d, st.tail.headV(h), nc * d);
    // 3-4. Landmarks; the lowest min-cosine chunks (and sink chunks) stay exact as outliers.
    const { minCos, release } = addLandmarks(ctx, st, store, h, chunks, 0);
    const lowest = device.selectChunks(at(minCos), chunks, o.outlierChunks, false);
    release();
    const outliers = [...new Set([...lowest, ...range(0, Math.min(sinkChunks, chunks))])].sort((a, b) => a - b);
    setOutliers(ctx, st, store, h, Int32Array.from(outliers));
  }
  store.tokens = nc;
  st.tail.drop(nc); // 5. the tail keeps the local window
  return store;
}

/** Copies the outlier chunks' exact K/V of head h and removes them from its landmark set. */
function setOutliers(ctx: CompressContext, st: SequenceState, store: CompressedStore, h: number, ids: Int32Array): void {
  const { device } = ctx;
  const { headDim: d } = ctx.spec;
  const C = ctx.options.chunkSize;
  const block = C * d;
  const slots = h * store.geometry.maxOutliers * block;
  ids.forEach((c, i) => {
    device.copy(at(store.outlierK, slots + i * block), st.tail.headK(h, c * C), block);
    device.copy(at(store.outlierV, slots + i * block), st.tail.headV(h, c * C), block);
  });
  const hs = store.heads[h]!;
  hs.outlierIds = ids;
  // Drop outliers from the landmark set, keeping it ascending by chunk id: move each run of
  // landmarks between two outliers down in one copy.
  const base = h * store.chunkCapacity;
  const out = new Set(ids);
  let w = 0;
  for (let r = 0; r < hs.landmarkCount; ) {
    if (out.has(hs.landmarkIds[r]!)) {
      r += 1;
      continue;
    }
    let end = r;
    while (end < hs.landmarkCount && !out.has(hs.landmarkIds[end]!)) end += 1;
    if (w !== r) {
      device.copy(at(store.landmarks, (base + w) * d), at(store.landmarks, (base + r) * d), (end - r) * d);
      hs.landmarkIds.copyWithin(w, r, end);
    }
    w += end - r;
    r = end;
  }
  hs.landmarkCount = w;
}

/**
 * Compaction: the tail's oldest whole chunks beyond the local window join the compressed store
 * (keys projected onto the prefill basis, values to the host, landmarks appended).
 */
export function compactSequence(ctx: CompressContext, st: SequenceState, store: CompressedStore): number {
  const { device, spec, options: o } = ctx;
  const { kvHeads: Hkv, headDim: d } = spec;
  const C = o.chunkSize;
  const m = Math.floor((st.tail.count - o.localTokens) / C);
  if (m <= 0) return 0;
  const n = m * C;
  const D = Hkv * d;
  const { rank } = store.geometry;
  const firstChunk = store.tokens / C;
  store.reserveChunks(firstChunk + m);

  // Keys: U_new = K_pre · proj.
  const k = preRopeKeys(ctx, st, n, store.tokens);
  const u = device.alloc(n * rank, 'f32', 'compress');
  try {
    device.gemm({ M: n, N: rank, K: D, a: at(k), lda: D, b: at(store.proj), ldb: rank, c: at(u), ldc: rank });
    device.convert(at(store.u, store.tokens * rank), at(u), n * rank);
  } finally {
    device.free(k);
    device.free(u);
  }
  for (let h = 0; h < Hkv; h++) {
    device.offload(store.values, (h * store.chunkCapacity + firstChunk) * C * d, st.tail.headV(h), n * d);
    addLandmarks(ctx, st, store, h, m, firstChunk).release();
  }
  store.tokens += n;
  st.tail.drop(n);
  return m;
}
