// Scripted workloads run through a cache and the float64 oracle side by side.
import type { ModelSpec, ResolvedShadowKVOptions, ShadowKVOptions } from '../../packages/shadowkv/src/backend.js';

export type Event =
  | { prefill: number[]; tokens: number; queries?: boolean }
  | { decode: number }
  | { reset: number };

export interface Scenario {
  name: string;
  spec: ModelSpec;
  batch: number;
  options: Omit<ResolvedShadowKVOptions, 'scoreScale'>;
  /** Rank of the key model; keys are exactly low-rank (noise 0) so factorizations agree to f32. */
  keyRank: number;
  script: Event[];
}

// NOTE: small host pages (3 chunks) so that every scenario reads and compacts across pages.
const small = (o: Partial<ShadowKVOptions>): Omit<ResolvedShadowKVOptions, 'scoreScale'> => ({
  rank: 12, chunkSize: 4, budget: 32, outlierChunks: 3, localTokens: 8, sinkTokens: 0,
  maxRecentTokens: 24, denseThreshold: 64, denseLayers: 0, svdOversample: 8, svdPowerIters: 2, hostPageChunks: 3, hotChunks: 0, fp8Values: false, packedValues: false, ...o,
});

export const SCENARIOS: Scenario[] = [
  {
    // Rows of different lengths; row 2 starts dense and is compressed during decode. A hot-value
    // cache of 13 slots per kv head, for 8 selected chunks: its slots collide.
    name: 'GQA, ragged batch of 3, Llama-3 RoPE, 26 decode steps with compaction, hot-value cache',
    spec: { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 32, rope: { theta: 500000, scaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64 } } },
    batch: 3,
    options: small({ sinkTokens: 4, hotChunks: 13 }),
    keyRank: 7,
    script: [{ prefill: [0], tokens: 203 }, { prefill: [1], tokens: 150, queries: true }, { prefill: [2], tokens: 41 }, { decode: 26 }],
  },
  {
    // A second prompt chunk after decoding (multi-turn), then generation past compaction.
    name: 'MHA, interleaved RoPE, continuation prefill between decodes',
    spec: { layers: 2, queryHeads: 3, kvHeads: 3, headDim: 16, rope: { theta: 10000, style: 'interleaved' } },
    batch: 2,
    options: small({ rank: 10, chunkSize: 8, budget: 48, outlierChunks: 2, localTokens: 16, maxRecentTokens: 16, denseThreshold: 100 }),
    keyRank: 6,
    script: [{ prefill: [0, 1], tokens: 130 }, { decode: 10 }, { prefill: [1, 0], tokens: 29, queries: true }, { decode: 12 }],
  },
  {
    // Reset one row and refill it while the other keeps decoding (continuous batching), with a
    // hot-value cache of 5 slots for 8 selected chunks (the refilled row's cache starts empty).
    name: 'GQA group of 8, row reset and refilled mid-stream',
    spec: { layers: 1, queryHeads: 8, kvHeads: 1, headDim: 64, rope: { theta: 10000 } },
    batch: 2,
    options: small({ rank: 8, chunkSize: 8, budget: 64, outlierChunks: 4, localTokens: 16, maxRecentTokens: 8, denseThreshold: 128, hotChunks: 5 }),
    keyRank: 5,
    script: [{ prefill: [0], tokens: 300 }, { prefill: [1], tokens: 200 }, { decode: 8 }, { reset: 1 }, { prefill: [1], tokens: 180 }, { decode: 14 }],
  },
];
