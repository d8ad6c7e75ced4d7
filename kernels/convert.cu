// Bulk dtype conversion (e.g. storing f32 results in the cache's 16-bit dtype): one element per
// thread, grid-stride. Mirrors runtime/wasm/convert.cc (same dtype: a plain copy).
#include "common.cuh"
#include "dtype.cuh"

__global__ void ConvertKernel(const void* src, int src_dtype, void* dst, int dst_dtype, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    convert_elem(src, src_dtype, (size_t)i, dst, dst_dtype, (size_t)i);
}

cudaError_t Convert(const void* src, int src_dtype, void* dst, int dst_dtype, int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (src_dtype == dst_dtype) {
    // NOTE: memmove semantics like the wasm op; different buffers never overlap here (one dtype
    // per buffer), the same range is a no-op.
    if (src == dst) return cudaSuccess;
    return cudaMemcpyAsync(dst, src, (size_t)n * (src_dtype == SKV_F32 ? 4 : 2), cudaMemcpyDefault, stream);
  }
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>(skv_ceil_div(n, threads), SKV_MAX_BLOCKS);
  ConvertKernel<<<blocks, threads, 0, stream>>>(src, src_dtype, dst, dst_dtype, n);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}

__global__ void SelfTestKernel(int* out) { *out = 42; }

cudaError_t SelfTest(cudaStream_t stream) {
  int* p = nullptr;
  SKV_CUDA_CALL(cudaMalloc(&p, sizeof(int)));
  SelfTestKernel<<<1, 1, 0, stream>>>(p);
  cudaError_t err = cudaGetLastError();
  int got = 0;
  if (err == cudaSuccess) err = cudaMemcpyAsync(&got, p, sizeof(int), cudaMemcpyDeviceToHost, stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  cudaFree(p);
  if (err == cudaSuccess && got != 42) err = cudaErrorUnknown;
  return err;
}
