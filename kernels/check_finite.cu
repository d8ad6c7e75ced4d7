// The value check of cache inputs that stay on the device (validate.ts checkValues, which scans
// host arrays): the flat index of the first element that is NaN, infinite or of magnitude above
// `limit`, as a 64-bit atomicMin. No wasm twin: the wasm device scans a host copy instead.
#include "common.cuh"
#include "dtype.cuh"

__global__ void CheckFiniteKernel(const void* x, int dtype, int64_t n, float limit, unsigned long long* first) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    // NOTE: !(|v| <= limit) is also true for NaN; this thread's later elements have larger indices.
    if (!(fabsf(load_f32(x, dtype, (size_t)i)) <= limit)) {
      atomicMin(first, (unsigned long long)i);
      return;
    }
  }
}

cudaError_t CheckFinite(const void* x, int dtype, int64_t n, float limit, unsigned long long* first, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>(skv_ceil_div(n, threads), SKV_MAX_BLOCKS);
  CheckFiniteKernel<<<blocks, threads, 0, stream>>>(x, dtype, n, limit, first);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
