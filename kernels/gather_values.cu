// Fetches the values of missed chunks from the paged host tier (mapped pinned memory, read over
// PCIe through UVA: zero-copy) into their device slots. One chunk per block, 16-byte loads where
// the addresses allow. Never one cudaMemcpy per chunk (DESIGN.md §4: 0.7 GB/s that way). Where the
// tier holds fp8 chunks (fp8_rows = C), each is dequantized on the way (fp8.cuh); where it is packed
// (bases), each is unpacked (pack.cuh). Mirrors runtime/wasm/gather_values.cc (skv_gather_values).
#include "fp8.cuh"
#include "pack.cuh"

enum { GATHER_THREADS = 128 };

__global__ void __launch_bounds__(GATHER_THREADS) GatherValuesKernel(const uint64_t* pages, int page_chunks, int heads, int h,
                                                                     const int32_t* ids, const int32_t* slots, int block,
                                                                     int dtype, int fp8_rows, const uint8_t* bases, char* dst) {
  const int i = blockIdx.x;
  const int64_t id = ids[i];
  const size_t bytes = (size_t)block * skv_dtype_size(dtype);  // one chunk, as gathered
  const size_t stored = fp8_rows > 0 ? fp8_chunk_bytes(fp8_rows, block / fp8_rows) : bytes;
  const char* page = reinterpret_cast<const char*>(pages[(size_t)(id / page_chunks) * heads + h]);
  const char* src = page + (size_t)(id % page_chunks) * stored;
  char* to = dst + (size_t)(slots ? slots[i] : i) * bytes;
  const bool aligned = (reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(to) | bytes) % 16 == 0;
  const int base = bases ? bases[pack_index(page_chunks, heads, h, id)] : PACK_RAW;
  if (base != PACK_RAW) {
    const uint8_t* chunk = reinterpret_cast<const uint8_t*>(src);
    if (aligned) {
      for (int w = threadIdx.x; w < block / 8; w += blockDim.x) reinterpret_cast<uint4*>(to)[w] = pack_word(pack_load8(chunk, block, w), base);
    } else {
      for (int j = threadIdx.x; j < block; j += blockDim.x) reinterpret_cast<uint16_t*>(to)[j] = pack_read(chunk, block, base, j);
    }
  } else if (fp8_rows > 0) {
    const int C = fp8_rows, d = block / C;
    const uint8_t* chunk = reinterpret_cast<const uint8_t*>(src);
    if (d % 16 == 0 && aligned) {  // a 16-byte word of codes lies in one row
      for (int w = threadIdx.x; w < block / 16; w += blockDim.x) {
        uint4 out[4];
        const int n = fp8_dequantize16(reinterpret_cast<const uint4*>(chunk)[w], *fp8_scale_of(chunk, C, d, (size_t)w * 16), dtype, out);
#pragma unroll
        for (int k = 0; k < 4; k++)
          if (k < n) reinterpret_cast<uint4*>(to)[w * n + k] = out[k];
      }
    } else {
      for (int j = threadIdx.x; j < block; j += blockDim.x) store_f32(to, dtype, j, fp8_chunk_value(chunk, C, d, j));
    }
  } else if (aligned) {
    const uint4* s = reinterpret_cast<const uint4*>(src);
    uint4* t = reinterpret_cast<uint4*>(to);
    for (size_t w = threadIdx.x; w < bytes / 16; w += blockDim.x) t[w] = s[w];
  } else {  // every dtype is at least 2 bytes, and so is every element offset
    const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
    uint16_t* t = reinterpret_cast<uint16_t*>(to);
    for (size_t w = threadIdx.x; w < bytes / 2; w += blockDim.x) t[w] = s[w];
  }
}

cudaError_t GatherValues(const uint64_t* pages, int page_chunks, int heads, int h, const int32_t* ids, const int32_t* slots,
                         int n, int block, int dtype, int fp8_rows, const uint8_t* bases, void* dst, cudaStream_t stream) {
  if (n <= 0 || block <= 0 || page_chunks <= 0) return cudaSuccess;
  GatherValuesKernel<<<n, GATHER_THREADS, 0, stream>>>(pages, page_chunks, heads, h, ids, slots, block, dtype, fp8_rows, bases,
                                                       static_cast<char*>(dst));
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
