// bf16 values [chunks x n] into the host tier's packed chunks (pack.cuh, runtime/wasm/pack.h): the
// host tier's writer under packedValues (the prompt's chunks at compression, snapshot restores).
// One chunk per block; dst may be mapped host memory. Mirrors runtime/wasm/pack_values.cc.
#include "pack.cuh"

enum { PACK_THREADS = 128 };

__global__ void __launch_bounds__(PACK_THREADS) PackValuesKernel(const uint16_t* src, int n, uint8_t* dst, uint8_t* bases) {
  const size_t c = blockIdx.x;
  const int base = pack_chunk_block(src + c * n, (size_t)n, dst + c * 2 * n);
  if (threadIdx.x == 0) bases[c] = (uint8_t)base;
}

cudaError_t PackValues(const void* src, int chunks, int n, void* dst, uint8_t* bases, cudaStream_t stream) {
  if (chunks <= 0 || n <= 0) return cudaSuccess;
  PackValuesKernel<<<chunks, PACK_THREADS, 0, stream>>>(static_cast<const uint16_t*>(src), n, static_cast<uint8_t*>(dst), bases);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
