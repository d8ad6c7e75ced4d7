// Packed bf16 chunks of the host tier on the device, in runtime/wasm/pack.h's format and through
// its scalar functions (the same bits as the wasm runtime): a chunk packed by a block, 8 values
// unpacked at a time (pack_unpack8).
#pragma once
#include "../runtime/wasm/pack.h"
#include "common.cuh"

// n bf16 values at src into their 2n-byte slot at dst, packed where they fit, by the whole block
// (every thread calls it); returns the chunk's base (PACK_RAW: copied) to every thread. dst may be
// mapped host memory: for each 8 values a thread writes their 8 low bytes and 4 bytes of codes.
__device__ __forceinline__ int pack_chunk_block(const uint16_t* src, size_t n, uint8_t* dst) {
  __shared__ int top;
  if (threadIdx.x == 0) top = 0;
  __syncthreads();
  int t = 0;
  for (size_t j = threadIdx.x; j < n; j += blockDim.x) t = pack_top(t, src[j]);
  atomicMax(&top, t);
  __syncthreads();
  const int base = top;
  bool fits = true;
  for (size_t j = threadIdx.x; j < n; j += blockDim.x) fits = fits && pack_fits(src[j], base);
  // NOTE: also the barrier after every thread read `top`, so the next chunk may reset it.
  if (!__syncthreads_and(fits)) {
    for (size_t j = threadIdx.x; j < n; j += blockDim.x) reinterpret_cast<uint16_t*>(dst)[j] = src[j];
    return PACK_RAW;
  }
  if (n % 8 == 0 && (reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst)) % 16 == 0) {
    for (size_t u = threadIdx.x; u < n / 8; u += blockDim.x) {
      const uint4 x = reinterpret_cast<const uint4*>(src)[u];
      const uint32_t w[4] = {x.x, x.y, x.z, x.w};
      uint32_t lo[2] = {0, 0}, codes = 0;
#pragma unroll
      for (int k = 0; k < 8; k++) {
        const uint16_t v = (uint16_t)(w[k / 2] >> (16 * (k % 2)));
        lo[k / 4] |= (uint32_t)pack_low(v) << (8 * (k % 4));
        codes |= pack_code(v, base) << (4 * k);
      }
      reinterpret_cast<uint2*>(dst)[u] = make_uint2(lo[0], lo[1]);
      reinterpret_cast<uint32_t*>(dst + n)[u] = codes;
    }
  } else {
    for (size_t j = threadIdx.x; j < n; j += blockDim.x) dst[j] = pack_low(src[j]);
    for (size_t j = 2 * threadIdx.x; j < n; j += 2 * blockDim.x)
      dst[n + j / 2] = (uint8_t)(pack_code(src[j], base) | (j + 1 < n ? pack_code(src[j + 1], base) << 4 : 0u));
  }
  return base;
}

// A packed chunk's 8 values of 16-byte word w (n % 8 == 0): their low bytes (x, y) and codes (z).
__device__ __forceinline__ uint4 pack_load8(const uint8_t* chunk, size_t n, size_t w) {
  const uint2 lo = reinterpret_cast<const uint2*>(chunk)[w];
  return make_uint4(lo.x, lo.y, reinterpret_cast<const uint32_t*>(chunk + n)[w], 0u);
}

// Those 8 values as a 16-byte word of bf16.
__device__ __forceinline__ uint4 pack_word(uint4 x, int base) {
  uint32_t out[4];
  pack_unpack8(x.x, x.y, x.z, base, out);
  return make_uint4(out[0], out[1], out[2], out[3]);
}
