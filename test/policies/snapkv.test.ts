import { runPolicyConformance } from '../../packages/shadowkv/src/testing/index.js';

runPolicyConformance({ name: 'snapkv', wide: { budget: 1000, windowTokens: 8 }, tight: { budget: 64, windowTokens: 8, kernelSize: 5 }, evicts: true });
