// Landmark scoring for one kv group: each query head softmaxes its logits over the chunks and a
// chunk scores the best probability any head gives it. Three launches: logits (a warp per chunk,
// every head), softmax per head (a block per head; float64 sum), max over the group.
// Mirrors runtime/wasm/score_chunks.cc (skv_score_chunks).
#include "common.cuh"
#include "dtype.cuh"

enum { SCORE_THREADS = 256 };

// 1. work[j*n + c] = scale * q_j . L_c; one warp per chunk, the landmark row read once for all heads.
__global__ void __launch_bounds__(SCORE_THREADS) ScoreLogitsKernel(const float* q, int g, int d, float scale,
                                                                   const void* landmarks, int dtype, int n, float* work) {
  extern __shared__ float qs[];  // [g x d]
  for (int i = threadIdx.x; i < g * d; i += blockDim.x) qs[i] = q[i];
  __syncthreads();
  const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int64_t c = (int64_t)blockIdx.x * warps + threadIdx.x / 32; c < n; c += (int64_t)gridDim.x * warps) {
    for (int j = 0; j < g; j++) {
      float s = 0.f;
      for (int e = lane; e < d; e += 32) s += qs[j * d + e] * load_f32(landmarks, dtype, (size_t)(c * d + e));
      s = warp_sum(s);
      if (lane == 0) work[(size_t)j * n + c] = scale * s;
    }
  }
}

// 2. Head j: work row = exp(logit - max), inv[j] = 1 / sum (the sum in float64: n may be 100K terms).
__global__ void __launch_bounds__(SCORE_THREADS) ScoreSoftmaxKernel(float* work, int n, float* inv) {
  __shared__ float redf[32];
  __shared__ double redd[32];
  float* lj = work + (size_t)blockIdx.x * n;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  float mx = -INFINITY;
  for (int c = threadIdx.x; c < n; c += blockDim.x) mx = lj[c] > mx ? lj[c] : mx;
  mx = warp_max(mx);
  if (lane == 0) redf[warp] = mx;
  __syncthreads();
  mx = -INFINITY;
  for (int w = 0; w < warps; w++) mx = redf[w] > mx ? redf[w] : mx;
  double sum = 0;
  for (int c = threadIdx.x; c < n; c += blockDim.x) {
    float e = skv_exp(lj[c] - mx);
    lj[c] = e;
    sum += e;
  }
  sum = warp_sum(sum);
  if (lane == 0) redd[warp] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0;
    for (int w = 0; w < warps; w++) total += redd[w];
    inv[blockIdx.x] = (float)(1.0 / total);
  }
}

// 3. scores[c] = max over heads of the probability (0 if every head gives NaN).
__global__ void ScoreMaxKernel(const float* work, const float* inv, int g, int n, float* scores) {
  for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < n; c += (int64_t)gridDim.x * blockDim.x) {
    float s = 0.f;
    for (int j = 0; j < g; j++) {
      float p = work[(size_t)j * n + c] * inv[j];
      s = p > s ? p : s;
    }
    scores[c] = s;
  }
}

cudaError_t ScoreChunks(const float* q, int g, int d, float scale, const void* landmarks, int dtype, int n,
                        float* scores, float* work, float* inv, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (g <= 0 || d <= 0) return cudaMemsetAsync(scores, 0, (size_t)n * sizeof(float), stream);
  const size_t smem = (size_t)g * d * sizeof(float);
  SKV_CUDA_CALL(skv_smem_optin(ScoreLogitsKernel, smem));
  const int warps = SCORE_THREADS / 32;
  ScoreLogitsKernel<<<(int)std::min<int64_t>(skv_ceil_div(n, warps), 4096), SCORE_THREADS, smem, stream>>>(
      q, g, d, scale, landmarks, dtype, n, work);
  SKV_LAUNCH_CHECK();
  ScoreSoftmaxKernel<<<g, SCORE_THREADS, 0, stream>>>(work, n, inv);
  SKV_LAUNCH_CHECK();
  ScoreMaxKernel<<<(int)std::min<int64_t>(skv_ceil_div(n, 256), 4096), 256, 0, stream>>>(work, inv, g, n, scores);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
