// Chunk landmarks: one block per chunk (landmarks.cuh, shared with the fused step's compaction).
// Mirrors runtime/wasm/landmarks.cc (skv_landmarks).
#include "landmarks.cuh"

__global__ void __launch_bounds__(LANDMARK_THREADS) LandmarksKernel(const void* keys, int dtype, int64_t ldk, int C, int d,
                                                                    float* landmarks, float* min_cos) {
  extern __shared__ float L[];  // [d] this chunk's landmark
  __shared__ float red[64];
  const int64_t c = blockIdx.x;
  float* out = landmarks + (size_t)c * d;
  const float lo = chunk_landmark(keys, dtype, ldk, C, d, c, L, red, true, [&](int j, float s) { out[j] = s; });
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
