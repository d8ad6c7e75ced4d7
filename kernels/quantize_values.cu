// Values [chunks x C x d] of a storage dtype into fp8 chunks (fp8.cuh, runtime/wasm/fp8.h): the
// host tier's writer when it holds fp8 (the prompt's chunks at compression, snapshot restores).
// One chunk per block; dst may be mapped host memory. Mirrors runtime/wasm/quantize_values.cc.
#include "fp8.cuh"

enum { QUANTIZE_THREADS = 128 };

__global__ void __launch_bounds__(QUANTIZE_THREADS) QuantizeValuesKernel(const void* src, int dtype, int C, int d, uint8_t* dst) {
  const size_t c = blockIdx.x;
  fp8_quantize_rows(static_cast<const char*>(src) + c * C * d * skv_dtype_size(dtype), dtype, C, d, dst + c * fp8_chunk_bytes(C, d));
}

cudaError_t QuantizeValues(const void* src, int dtype, int chunks, int C, int d, void* dst, cudaStream_t stream) {
  if (chunks <= 0 || C <= 0 || d <= 0) return cudaSuccess;
  QuantizeValuesKernel<<<chunks, QUANTIZE_THREADS, 0, stream>>>(src, dtype, C, d, static_cast<uint8_t*>(dst));
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
