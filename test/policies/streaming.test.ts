import { runPolicyConformance } from '../../packages/shadowkv/src/testing/index.js';

runPolicyConformance({ name: 'streaming', wide: { windowTokens: 1000 }, tight: { sinkTokens: 4, windowTokens: 28 }, evicts: true });
