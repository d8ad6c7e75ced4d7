// What the oracle remembers about one sequence of one layer (docs/algorithm.md "State of one (layer, sequence)").
import type { Matrix } from './linalg.js';

/** The first compression's factors, plus U rows appended by compactions. */
export interface Basis {
  rank: number; // r'
  uRows: Float64Array[]; // [nc] -> [r']
  SV: Matrix; // [r', Hkv*d]
  proj: Matrix; // [Hkv*d, r']
}

export interface SequenceState {
  length: number;
  /** NOTE: the original pre-RoPE keys of every token; runtimes recover them by inverse RoPE, the oracle keeps the inputs. */
  keysPre: Float64Array[][]; // [Hkv][t] -> [d]
  /** Exact post-RoPE keys of every token; read for the tail, outlier chunks and landmarks only. */
  keysPost: Float64Array[][]; // [Hkv][t] -> [d]
  values: Float64Array[][]; // [Hkv][t] -> [d], always exact
  /** nc: tokens [0, nc) are in the compressed store; a multiple of chunkSize. */
  compressed: number;
  basis: Basis | null;
  /**
   * `RoPE_t(U[t] · SV_h)` for t < nc, what a decode step rebuilds for a selected chunk. U rows and SV never
   * change once written, so the oracle rebuilds each token once, when it enters the compressed store.
   */
  rebuiltKeys: Float64Array[][]; // [Hkv][t] -> [d]
  outliers: number[][]; // [Hkv] -> ascending chunk ids
  landmarkChunks: number[][]; // [Hkv] -> ascending chunk ids
  landmarks: Float64Array[][]; // [Hkv][i] -> [d], landmark of chunk landmarkChunks[h][i]
  /** Chunk ids selected at the last decode step, per kv head ([] when dense). */
  selection: number[][];
}

export function emptySequence(kvHeads: number): SequenceState {
  const perHead = <T>(): T[][] => Array.from({ length: kvHeads }, () => []);
  return {
    length: 0,
    keysPre: perHead(),
    keysPost: perHead(),
    values: perHead(),
    compressed: 0,
    basis: null,
    rebuiltKeys: perHead(),
    outliers: perHead(),
    landmarkChunks: perHead(),
    landmarks: perHead(),
    selection: perHead(),
  };
}
