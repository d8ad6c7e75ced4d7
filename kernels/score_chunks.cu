// Landmark scoring for one kv group: each query head softmaxes its logits over the chunks and a
// chunk scores the best probability any head gives it. Two launches: logits and per-block maxima
// (score.cuh), then one block for the softmax sums of every head and the max over the group
// (select.cuh), the same device code as the fused decode step. Mirrors runtime/wasm/score_chunks.cc.
#include "score.cuh"
#include "select.cuh"

// 1. work[j*n + c] = scale * q_j . L_c; maxes[b*g + j] = max over block b's landmarks.
__global__ void __launch_bounds__(LOGIT_THREADS, 2) ScoreLogitsKernel(const float* q, int g, int d, float scale,
                                                                   const void* landmarks, int dtype, int n, float* work,
                                                                   float* maxes) {
  __shared__ float red[LOGIT_GROUPS * LOGIT_HEADS];
  extern __shared__ __align__(16) char stage[];
  landmark_logits<true>(q, g, d, scale, landmarks, dtype, n, gridDim.x, blockIdx.x, blockIdx.x + 1, work, n, maxes + (size_t)blockIdx.x * g,
                  red, stage);
}

// 2. scores[c] = max_j exp(work[j][c] - max_j) / sum_c' exp(work[j][c'] - max_j).
//    A head whose f32 softmax failed (finite inputs past f32) is scored in float64 instead.
// NOTE: the explicit 1 block an SM lets ptxas take 46 registers (it took 32 and spilled with the redo).
__global__ void __launch_bounds__(SELECT_THREADS, 1) ScoreSoftmaxKernel(const float* q, int d, float scale, const void* landmarks,
                                                                     int dtype, const float* work, const float* maxes, int nb,
                                                                     int g, int n, float* scores) {
  __shared__ double red_d[32 * SOFTMAX_HEADS];
  extern __shared__ float stats[];  // [g] max, [g] inverse sum, [g] sums (doubles)
  softmax_max(maxes, nb, g, stats);
  softmax_inv(work, n, g, n, stats, stats + g, reinterpret_cast<double*>(stats + 2 * g), red_d);
  chunk_scores(work, n, g, n, stats, stats + g, scores);
  redo_failed_heads(q, g, d, scale, landmarks, dtype, n, 0, n, stats + g, scores);
}

cudaError_t ScoreChunks(const float* q, int g, int d, float scale, const void* landmarks, int dtype, int n,
                        float* scores, float* work, float* maxes, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (g <= 0 || d <= 0) return cudaMemsetAsync(scores, 0, (size_t)n * sizeof(float), stream);
  const int nb = logit_blocks(n);
  SKV_CUDA_CALL(skv_smem_optin(ScoreLogitsKernel, LOGIT_SMEM));
  ScoreLogitsKernel<<<nb, LOGIT_THREADS, LOGIT_SMEM, stream>>>(q, g, d, scale, landmarks, dtype, n, work, maxes);
  SKV_LAUNCH_CHECK();
  const size_t smem = (sizeof(float) * 2 + sizeof(double)) * (size_t)g;
  SKV_CUDA_CALL(skv_smem_optin(ScoreSoftmaxKernel, smem));
  ScoreSoftmaxKernel<<<1, SELECT_THREADS, smem, stream>>>(q, d, scale, landmarks, dtype, work, maxes, nb, g, n, scores);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
