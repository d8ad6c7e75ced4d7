// Tiny Llama configs of odd sizes (so tails of every loop run) and in-memory checkpoints of them.
import type { DType, Tensor } from '../../packages/shadowkv/src/backend.js';
import { checkpointFiles, randomWeights, readCheckpoint, type CheckpointLayout, type LlamaConfig } from '../../packages/llama/src/index.js';

/** GQA (6 q heads, 2 kv heads), untied, Llama-3 RoPE scaling that touches every frequency band at head_dim 8. */
export const GQA: LlamaConfig = {
  vocabSize: 61, hiddenSize: 48, intermediateSize: 72, layers: 2, queryHeads: 6, kvHeads: 2, headDim: 8,
  rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 16 },
  maxPositions: 4096, tieWordEmbeddings: false, attentionBias: false, mlpBias: false, eosTokenIds: [],
};

/** MHA, tied embeddings, biases everywhere, head_dim (12) apart from hidden / heads (8). */
export const MHA: LlamaConfig = {
  vocabSize: 53, hiddenSize: 40, intermediateSize: 56, layers: 3, queryHeads: 5, kvHeads: 5, headDim: 12,
  rmsNormEps: 1e-6, ropeTheta: 500000, maxPositions: 4096, tieWordEmbeddings: true, attentionBias: true, mlpBias: true, eosTokenIds: [2],
};

/** Random weights (changed by `edit`, if given) written as HF files and read back through `readCheckpoint`. */
export function memoryCheckpoint(config: LlamaConfig, options: { seed?: number; dtype?: DType; edit?: (tensors: Map<string, Tensor>) => void } & CheckpointLayout = {}) {
  const { edit, seed, dtype, ...layout } = options;
  const tensors = randomWeights(config, { seed, dtype });
  edit?.(tensors);
  const files = checkpointFiles(config, tensors, layout);
  return { tensors, files, checkpoint: readCheckpoint((name) => files.get(name)) };
}
