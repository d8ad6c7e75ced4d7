import { runPolicyConformance } from '../../packages/shadowkv/src/testing/index.js';

runPolicyConformance({ name: 'quest', wide: { budget: 1024, chunkSize: 8 }, tight: { budget: 32, chunkSize: 8, recentTokens: 8 } });
