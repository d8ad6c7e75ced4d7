// Fetches the values of missed chunks from the paged host tier (mapped pinned memory, read over
// PCIe through UVA: zero-copy) into their device slots. One chunk per block, 16-byte loads where
// the addresses allow. Never one cudaMemcpy per chunk (DESIGN.md §4: 0.7 GB/s that way).
// Mirrors runtime/wasm/gather_values.cc (skv_gather_values).
#include "common.cuh"

enum { GATHER_THREADS = 128 };

__global__ void __launch_bounds__(GATHER_THREADS) GatherValuesKernel(const uint64_t* pages, int page_chunks, int heads, int h,
                                                                     const int32_t* ids, const int32_t* slots, size_t bytes,
                                                                     char* dst) {
  const int i = blockIdx.x;
  const int64_t id = ids[i];
  const char* page = reinterpret_cast<const char*>(pages[(size_t)(id / page_chunks) * heads + h]);
  const char* src = page + (size_t)(id % page_chunks) * bytes;
  char* to = dst + (size_t)(slots ? slots[i] : i) * bytes;
  if ((reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(to) | bytes) % 16 == 0) {
    const uint4* s = reinterpret_cast<const uint4*>(src);
    uint4* t = reinterpret_cast<uint4*>(to);
    for (size_t w = threadIdx.x; w < bytes / 16; w += blockDim.x) t[w] = s[w];
  } else {  // every dtype is at least 2 bytes, and so is every element offset
    const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
    uint16_t* t = reinterpret_cast<uint16_t*>(to);
    for (size_t w = threadIdx.x; w < bytes / 2; w += blockDim.x) t[w] = s[w];
  }
}

cudaError_t GatherValues(const uint64_t* pages, int page_chunks, int heads, int h, const int32_t* ids,
                         const int32_t* slots, int n, int block, int dtype, void* dst, cudaStream_t stream) {
  if (n <= 0 || block <= 0 || page_chunks <= 0) return cudaSuccess;
  const size_t bytes = (size_t)block * (dtype == SKV_F32 ? 4 : 2);  // one chunk
  GatherValuesKernel<<<n, GATHER_THREADS, 0, stream>>>(pages, page_chunks, heads, h, ids, slots, bytes, static_cast<char*>(dst));
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
