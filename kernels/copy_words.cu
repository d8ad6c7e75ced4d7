// Words between device memory and pinned host memory, copied by a kernel through UVA rather than by
// the copy engines: compress() keeps those busy with a row's value copies (copyAside, ~6 ms at 128K)
// while lowRankKeys' small matrices and selectChunks' indices cross, and a copy-engine transfer
// queued behind them waited for all of them (bench/NOTES.md v27, v33).
#include "common.cuh"

__global__ void CopyWordsKernel(uint4* dst, const uint4* src, size_t n16, unsigned* dst4, const unsigned* src4, size_t n4) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n16; i += (size_t)gridDim.x * blockDim.x) dst[i] = src[i];
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += (size_t)gridDim.x * blockDim.x) dst4[i] = src4[i];
}

cudaError_t CopyWords(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  const size_t n16 = bytes / 16, tail = bytes % 16 / 4;
  CopyWordsKernel<<<(int)std::max<size_t>(1, std::min<size_t>(skv_ceil_div(n16, 256), 256)), 256, 0, stream>>>(
      static_cast<uint4*>(dst), static_cast<const uint4*>(src), n16, static_cast<unsigned*>(dst) + n16 * 4,
      static_cast<const unsigned*>(src) + n16 * 4, tail);
  return cudaGetLastError();
}
