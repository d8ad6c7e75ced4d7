import { runPolicyConformance } from '../../packages/shadowkv/src/testing/index.js';

// Wide: rows stay dense below the threshold. Tight: compressed from 48 tokens, 16 tokens selected.
runPolicyConformance({
  name: 'shadowkv',
  wide: { denseThreshold: 100000 },
  tight: { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 },
});
