// The oracle's configuration types; they mirror the SDK's spec and options for one layer.

export type RopeStyle = 'half' | 'interleaved';

/** Llama-3 frequency scaling (HF `rope_type: "llama3"`). */
export interface OracleRopeScaling {
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositions: number;
}

export interface OracleRope {
  theta: number;
  /** Defaults to 'half', as in the SDK's `RopeSpec`. */
  style?: RopeStyle;
  scaling?: OracleRopeScaling;
}

/** One layer's attention geometry. */
export interface OracleSpec {
  queryHeads: number;
  kvHeads: number;
  headDim: number;
  rope: OracleRope;
  /** Default 1 / sqrt(headDim). */
  scale?: number;
}

export interface OracleShadowKVOptions {
  rank: number;
  chunkSize: number;
  budget: number;
  outlierChunks: number;
  localTokens: number;
  sinkTokens: number;
  maxRecentTokens: number;
  denseThreshold: number;
}
