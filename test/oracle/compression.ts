// The compression rule run at the end of every prefill / decode call (docs/algorithm.md "Compression").
import { row, zeros, type Matrix } from './linalg.js';
import { lowRankKeys, projectKeys } from './lowRankKeys.js';
import { chunkLandmarks, rebuildKeys, selectOutliers } from './ops.js';
import type { SequenceState } from './sequenceState.js';
import type { OracleShadowKVOptions, RopeStyle } from './types.js';

/** First compression of a dense sequence past the threshold, or compaction of a long tail; at most one. */
export function compressIfDue(state: SequenceState, options: OracleShadowKVOptions, rope: RopeContext): void {
  const { denseThreshold, localTokens, maxRecentTokens } = options;
  if (!state.basis) {
    if (state.length >= denseThreshold) firstCompression(state, options, rope);
  } else if (state.length - state.compressed > localTokens + maxRecentTokens) {
    compaction(state, options, rope);
  }
}

/** What rebuilding a key needs besides the basis. */
export interface RopeContext {
  invFreq: Float64Array;
  style: RopeStyle;
}

/** Rebuilt post-RoPE keys of the tokens [from, to) that just entered the compressed store. */
function rebuildNewKeys(state: SequenceState, from: number, to: number, rope: RopeContext): void {
  const basis = state.basis!;
  const d = state.keysPre[0][0].length;
  const positions = Array.from({ length: to - from }, (_, i) => from + i);
  state.rebuiltKeys.forEach((keys, h) => {
    for (const k of rebuildKeys(basis.uRows, basis.SV, h, d, positions, rope.invFreq, rope.style)) keys.push(k);
  });
}

/** Pre-RoPE keys of tokens [from, to), heads concatenated: column h*d + j. */
function concatenatedKeys(state: SequenceState, from: number, to: number): Matrix {
  const heads = state.keysPre;
  const d = heads[0][0].length;
  const K = zeros(to - from, heads.length * d);
  for (let t = from; t < to; t++) heads.forEach((keys, h) => K.data.set(keys[t], (t - from) * K.cols + h * d));
  return K;
}

function firstCompression(state: SequenceState, options: OracleShadowKVOptions, rope: RopeContext): void {
  const C = options.chunkSize;
  const nc = Math.floor((state.length - options.localTokens) / C) * C;
  if (nc <= 0) return;
  // 1. Low-rank keys: exact truncated SVD of K [nc, Hkv*d].
  const lowRank = lowRankKeys(concatenatedKeys(state, 0, nc), options.rank);
  state.basis = {
    rank: lowRank.rank,
    uRows: Array.from({ length: nc }, (_, t) => row(lowRank.U, t)),
    SV: lowRank.SV,
    proj: lowRank.proj,
  };
  rebuildNewKeys(state, 0, nc, rope);
  // 2. Values "move to the host store": the oracle keeps them where they are, always exact.
  // 3-4. Landmarks and outliers, per kv head, from the exact post-RoPE keys.
  state.keysPost.forEach((keys, h) => {
    const { landmarks, minCos } = chunkLandmarks(keys.slice(0, nc), C);
    const outliers = selectOutliers(minCos, options.outlierChunks, options.sinkTokens, C);
    const kept = landmarks.map((_, c) => c).filter((c) => !outliers.includes(c));
    state.outliers[h] = outliers;
    state.landmarkChunks[h] = kept;
    state.landmarks[h] = kept.map((c) => landmarks[c]);
  });
  state.compressed = nc;
}

function compaction(state: SequenceState, options: OracleShadowKVOptions, rope: RopeContext): void {
  const C = options.chunkSize;
  const basis = state.basis!;
  const nc = state.compressed;
  const m = Math.floor((state.length - nc - options.localTokens) / C);
  if (m <= 0) return;
  const end = nc + m * C;
  // U_new = K_pre · proj, appended to U; no new SVD, no outlier re-selection.
  const uNew = projectKeys(concatenatedKeys(state, nc, end), basis.proj);
  for (let t = 0; t < uNew.rows; t++) basis.uRows.push(row(uNew, t));
  rebuildNewKeys(state, nc, end, rope);
  state.keysPost.forEach((keys, h) => {
    const { landmarks } = chunkLandmarks(keys.slice(nc, end), C);
    landmarks.forEach((l, i) => {
      state.landmarkChunks[h].push(nc / C + i);
      state.landmarks[h].push(l);
    });
  });
  state.compressed = end;
}

