// Helpers shared by the kernels: error propagation, grid sizes, warp reductions and the exp of
// runtime/wasm/simd.h (exactly 0 below -87.3, so masked -inf logits stay masked).
#pragma once
#include <cuda_runtime.h>
#include <algorithm>
#include <math.h>
#include <stdint.h>
#include "launchers.h"

// Returns early from a launcher with the first CUDA error (FLASHINFER_CUDA_CALL).
#define SKV_CUDA_CALL(expr)                 \
  do {                                      \
    cudaError_t skv_err_ = (expr);          \
    if (skv_err_ != cudaSuccess) return skv_err_; \
  } while (0)

// The error of the launch just made (configuration errors show here, faults at the next sync).
#define SKV_LAUNCH_CHECK() SKV_CUDA_CALL(cudaGetLastError())

static inline int64_t skv_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid-stride launches never need more blocks than this.
enum { SKV_MAX_BLOCKS = 65535 };

// Allows a kernel more than the default 48 KB of dynamic shared memory, when it needs it.
template <typename Kernel>
static inline cudaError_t skv_smem_optin(Kernel kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  int dev = 0, optin = 0;
  SKV_CUDA_CALL(cudaGetDevice(&dev));
  SKV_CUDA_CALL(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (bytes > (size_t)optin) return cudaErrorInvalidConfiguration;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// NOTE: NaN-tolerant like the wasm loops (`x > m ? x : m`): a NaN never becomes the max.
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) {
    float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// exp(x) by range reduction and the degree-5 polynomial of runtime/wasm/simd.h (Cephes expf);
// exactly 0 below -87.3, inputs above 88.3 clamp.
__device__ __forceinline__ float skv_exp(float x) {
  if (!(x >= -87.3f)) return 0.f;
  if (x > 88.3f) x = 88.3f;
  float n = rintf(x * 1.44269504089f);
  float r = x - n * 0.693359375f - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * r * r + r + 1.f;
  return y * __int_as_float(((int)n + 127) << 23);
}

// Sums of a and b over the whole block (blockDim.x a multiple of 32, at most 1024), returned to
// every thread. red: shared scratch of 64 floats. Ends with the block synchronized.
__device__ __forceinline__ void block_sum2(float& a, float& b, float* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  a = warp_sum(a);
  b = warp_sum(b);
  if (lane == 0) {
    red[warp] = a;
    red[32 + warp] = b;
  }
  __syncthreads();
  float sa = 0.f, sb = 0.f;
  for (int w = 0; w < warps; w++) {
    sa += red[w];
    sb += red[32 + w];
  }
  a = sa;
  b = sb;
  __syncthreads();
}

__host__ __device__ __forceinline__ int64_t skv_min64(int64_t a, int64_t b) { return a < b ? a : b; }
