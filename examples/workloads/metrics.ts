// Agreement between two outputs: the conformance kit's measures (shadowkv/testing).
export { cosine, relError } from '../../packages/shadowkv/src/testing/metrics.js';
