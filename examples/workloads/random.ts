// Seeded randomness for synthetic workloads and tests: the conformance kit's (shadowkv/testing).
export { randn, rng } from '../../packages/shadowkv/src/testing/random.js';
