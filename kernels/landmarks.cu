// Chunk landmarks: the mean of each chunk's post-RoPE keys, and how well the mean represents the
// chunk (the smallest cosine between the mean and a key), which picks the outlier chunks.
// One block per chunk. Mirrors runtime/wasm/landmarks.cc (skv_landmarks).
#include "common.cuh"
#include "dtype.cuh"

enum { LANDMARK_THREADS = 128 };

__global__ void __launch_bounds__(LANDMARK_THREADS) LandmarksKernel(const void* keys, int dtype, int64_t ldk, int C, int d,
                                                                    float* landmarks, float* min_cos) {
  extern __shared__ float L[];  // [d] this chunk's landmark
  __shared__ float red[64];
  const int c = blockIdx.x;
  const int64_t row0 = (int64_t)c * C;
  // 1. Mean of the chunk's rows, summed in row order then scaled (as the wasm op does).
  const float invC = 1.f / (float)C;
  float nn = 0.f, unused = 0.f;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    float s = 0.f;
    for (int t = 0; t < C; t++) s += load_f32(keys, dtype, (size_t)((row0 + t) * ldk + j));
    s *= invC;
    L[j] = s;
    landmarks[(size_t)c * d + j] = s;
    nn += s * s;
  }
  block_sum2(nn, unused, red);
  const float nl = sqrtf(nn);
  // 2. The smallest cosine between the landmark and a row.
  float lo = INFINITY;
  for (int t = 0; t < C; t++) {
    float dot = 0.f, kk = 0.f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
      float k = load_f32(keys, dtype, (size_t)((row0 + t) * ldk + j));
      dot += L[j] * k;
      kk += k * k;
    }
    block_sum2(dot, kk, red);
    float denom = nl * sqrtf(kk);
    float cs = dot / (denom > 1e-30f ? denom : 1e-30f);
    lo = cs < lo ? cs : lo;
  }
  if (threadIdx.x == 0) min_cos[c] = lo;
}

cudaError_t Landmarks(const void* keys, int dtype, int64_t ldk, int n_chunks, int C, int d, float* landmarks,
                      float* min_cos, cudaStream_t stream) {
  if (n_chunks <= 0 || C <= 0 || d <= 0) return cudaSuccess;
  if (n_chunks > 0x7fffffff / 2) return cudaErrorInvalidValue;
  const size_t smem = (size_t)d * sizeof(float);
  SKV_CUDA_CALL(skv_smem_optin(LandmarksKernel, smem));
  LandmarksKernel<<<n_chunks, LANDMARK_THREADS, smem, stream>>>(keys, dtype, ldk, C, d, landmarks, min_cos);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
