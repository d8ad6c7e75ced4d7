// Landmark scoring for one kv group: each query head softmaxes its logits over the chunks and a
// chunk scores the best probability any head gives it. Two launches: logits (score.cuh), then one
// block for the softmax statistics of every head and the max over the group (select.cuh), the
// same device code as the fused decode step. Mirrors runtime/wasm/score_chunks.cc (skv_score_chunks).
#include "score.cuh"
#include "select.cuh"

// 1. work[j*n + c] = scale * q_j . L_c.
__global__ void __launch_bounds__(LOGIT_THREADS) ScoreLogitsKernel(const float* q, int g, int d, float scale,
                                                                   const void* landmarks, int dtype, int n, float* work) {
  extern __shared__ float qs[];  // [g x d]
  for (int i = threadIdx.x; i < g * d; i += blockDim.x) qs[i] = q[i];
  __syncthreads();
  landmark_logits(qs, g, d, scale, landmarks, dtype, n, work, n, blockIdx.x, gridDim.x);
}

// 2. inv[j] = 1 / sum_c exp(work[j][c] - max_j); scores[c] = max_j exp(work[j][c] - max_j) * inv[j].
__global__ void __launch_bounds__(SELECT_THREADS) ScoreSoftmaxKernel(const float* work, int g, int n, float* scores,
                                                                     float* stats) {
  __shared__ float red_f[32];
  __shared__ double red_d[32];
  float* mx = stats;    // [g]
  float* inv = stats + g;  // [g]
  for (int j = 0; j < g; j++) {
    float m, v;
    softmax_stats(work + (size_t)j * n, n, red_f, red_d, &m, &v);
    if (threadIdx.x == 0) {
      mx[j] = m;
      inv[j] = v;
    }
  }
  __syncthreads();
  for (int c = threadIdx.x; c < n; c += blockDim.x) scores[c] = chunk_score(work, n, g, c, mx, inv);
}

cudaError_t ScoreChunks(const float* q, int g, int d, float scale, const void* landmarks, int dtype, int n,
                        float* scores, float* work, float* stats, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (g <= 0 || d <= 0) return cudaMemsetAsync(scores, 0, (size_t)n * sizeof(float), stream);
  const size_t smem = (size_t)g * d * sizeof(float);
  SKV_CUDA_CALL(skv_smem_optin(ScoreLogitsKernel, smem));
  const int units = (int)std::min<int64_t>(skv_ceil_div(n, LOGIT_THREADS / LOGIT_LANES), 4096);
  ScoreLogitsKernel<<<units, LOGIT_THREADS, smem, stream>>>(q, g, d, scale, landmarks, dtype, n, work);
  SKV_LAUNCH_CHECK();
  ScoreSoftmaxKernel<<<1, SELECT_THREADS, 0, stream>>>(work, g, n, scores, stats);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
