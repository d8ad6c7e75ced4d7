// Reference versions of each ShadowKV op (docs/algorithm.md), one function per op, vectors as Float64Array rows.
import { dot, norm, type Matrix } from './linalg.js';
import { ropeVector } from './rope.js';
import type { RopeStyle } from './types.js';

/** `cos(a, b) = a·b / max(|a||b|, 1e-30)`. */
export function cosine(a: Float64Array, b: Float64Array): number {
  return dot(a, b) / Math.max(norm(a) * norm(b), 1e-30);
}

/** Per chunk of C consecutive keys: the mean key (landmark) and the lowest cosine of a key to it. */
export function chunkLandmarks(keys: Float64Array[], chunkSize: number): { landmarks: Float64Array[]; minCos: number[] } {
  if (keys.length % chunkSize !== 0) throw new Error(`chunkLandmarks: ${keys.length} keys is not a multiple of ${chunkSize}`);
  const landmarks: Float64Array[] = [];
  const minCos: number[] = [];
  for (let start = 0; start < keys.length; start += chunkSize) {
    const chunk = keys.slice(start, start + chunkSize);
    const mean = new Float64Array(chunk[0].length);
    for (const k of chunk) for (let j = 0; j < mean.length; j++) mean[j] += k[j] / chunkSize;
    landmarks.push(mean);
    minCos.push(Math.min(...chunk.map((k) => cosine(mean, k))));
  }
  return { landmarks, minCos };
}

/**
 * Outlier chunk ids, ascending: the `min(count, nChunks)` chunks with the lowest minCos
 * (ties: lower chunk id), plus every chunk holding a token `< sinkTokens`.
 */
export function selectOutliers(minCos: number[], count: number, sinkTokens: number, chunkSize: number): number[] {
  const byCos = minCos.map((_, c) => c).sort((a, b) => minCos[a] - minCos[b] || a - b);
  const chosen = new Set(byCos.slice(0, Math.min(count, minCos.length)));
  for (let c = 0; c * chunkSize < sinkTokens && c < minCos.length; c++) chosen.add(c);
  return [...chosen].sort((a, b) => a - b);
}

function softmax(logits: number[]): number[] {
  const max = Math.max(...logits);
  const e = logits.map((x) => Math.exp(x - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / sum);
}

/** `s[c] = max over the group's query heads j of softmax_c(scale · q_j · L[c])`. */
export function scoreChunks(queries: Float64Array[], landmarks: Float64Array[], scale: number): number[] {
  if (landmarks.length === 0) return [];
  const perHead = queries.map((q) => softmax(landmarks.map((l) => scale * dot(q, l))));
  return landmarks.map((_, c) => Math.max(...perHead.map((p) => p[c])));
}

/** Indices of the top k scores, ascending. NOTE: ties go to the lower index so every runtime selects the same set. */
export function selectChunks(scores: number[], k: number): number[] {
  const byScore = scores.map((_, c) => c).sort((a, b) => scores[b] - scores[a] || a - b);
  return byScore.slice(0, Math.max(0, Math.min(k, scores.length))).sort((a, b) => a - b);
}

/** Low-rank keys of head h back to post-RoPE: `RoPE_pos(U[pos] · SV[:, h*d:(h+1)*d])` for each position. */
export function rebuildKeys(
  uRows: Float64Array[],
  sv: Matrix,
  head: number,
  headDim: number,
  positions: number[],
  invFreq: Float64Array,
  style: RopeStyle,
): Float64Array[] {
  return positions.map((pos) => {
    const pre = new Float64Array(headDim);
    const u = uRows[pos];
    const { rows, cols, data } = sv;
    for (let i = 0; i < rows; i++) {
      const ui = u[i];
      const base = i * cols + head * headDim; // SV[i, h*d]
      for (let j = 0; j < headDim; j++) pre[j] += ui * data[base + j];
    }
    return ropeVector(pre, pos, invFreq, style);
  });
}

/** Exact softmax attention of one query over a set of key/value rows (order does not matter). */
export function sparseAttention(q: Float64Array, keys: Float64Array[], values: Float64Array[], scale: number): Float64Array {
  if (keys.length !== values.length || keys.length === 0) throw new Error(`sparseAttention: ${keys.length} keys, ${values.length} values`);
  const p = softmax(keys.map((k) => scale * dot(q, k)));
  const out = new Float64Array(values[0].length);
  values.forEach((v, t) => {
    for (let j = 0; j < out.length; j++) out[j] += p[t] * v[j];
  });
  return out;
}

/** Query s (at absolute index offset + s) attends to keys [0, offset + s]. */
export function causalAttention(
  queries: Float64Array[],
  keys: Float64Array[],
  values: Float64Array[],
  scale: number,
  offset: number,
): Float64Array[] {
  return queries.map((q, s) => sparseAttention(q, keys.slice(0, offset + s + 1), values.slice(0, offset + s + 1), scale));
}
