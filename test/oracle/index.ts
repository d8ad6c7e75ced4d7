// The float64 oracle of shadowkv: plain reference implementations that the tests compare runtimes against.
export type { OracleRope, OracleRopeScaling, OracleShadowKVOptions, OracleSpec, RopeStyle } from './types.js';
export { dot, frobeniusDistance, fromRows, householderQr, matmul, norm, svd, transpose, zeros, type Matrix, type Svd } from './linalg.js';
export { applyRope, ropeFrequencies, ropePair, ropeVector } from './rope.js';
export { causalAttention, chunkLandmarks, cosine, rebuildKeys, scoreChunks, selectChunks, selectOutliers, sparseAttention } from './ops.js';
export { lowRankKeys, projectKeys, SIGMA_CUTOFF, type LowRankKeys } from './lowRankKeys.js';
export { OracleGeometry } from './geometry.js';
export { OracleShadowKV } from './OracleShadowKV.js';
export { OracleFullKV } from './OracleFullKV.js';
