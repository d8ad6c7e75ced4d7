// fp8 chunks of the host tier on the device, in runtime/wasm/fp8.h's format and through its scalar
// functions (the same bits as the wasm runtime): a chunk quantized by a block (a warp per row), and
// codes dequantized 16 at a time (one 16-byte word of a row) to the storage dtype.
#pragma once
#include "../runtime/wasm/fp8.h"
#include "common.cuh"
#include "dtype.cuh"

// Rows [C x d] of src (dtype, contiguous) into one fp8 chunk at dst (fp8_chunk_bytes(C, d) bytes,
// padding zeroed), by the whole block. dst may be mapped host memory: the writes are a warp's
// consecutive bytes, one transaction each.
__device__ __forceinline__ void fp8_quantize_rows(const void* src, int dtype, int C, int d, uint8_t* dst) {
  const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int t = threadIdx.x / 32; t < C; t += warps) {
    const size_t row = (size_t)t * d;
    float amax = 0.f;
    for (int j = lane; j < d; j += 32) {
      const float a = fabsf(load_f32(src, dtype, row + j));
      amax = a > amax ? a : amax;
    }
    const int e = fp8_scale(warp_max(amax));
    for (int j = lane; j < d; j += 32) dst[row + j] = fp8_quantize(load_f32(src, dtype, row + j), e);
    if (lane == 0) dst[(size_t)C * d + t] = (uint8_t)(int8_t)e;
  }
  for (size_t b = (size_t)C * d + C + threadIdx.x; b < fp8_chunk_bytes(C, d); b += blockDim.x) dst[b] = 0;
}

// 16 codes of one row (a 16-byte word, scale 2^e) as 16 values of dtype: out[0, words) with words
// = 2 for the 16-bit dtypes, 4 for f32 (the 16-byte words they fill, in order). Returns words.
__device__ __forceinline__ int fp8_dequantize16(uint4 codes, int e, int dtype, uint4* out) {
  const uint32_t c[4] = {codes.x, codes.y, codes.z, codes.w};
  uint32_t w[16];
#pragma unroll
  for (int i = 0; i < 16; i += 2) {
    const float a = fp8_dequantize((uint8_t)(c[i / 4] >> (8 * (i % 4))), e);
    const float b = fp8_dequantize((uint8_t)(c[i / 4] >> (8 * (i % 4 + 1))), e);
    if (dtype == SKV_F32) {
      w[i] = f32_bits(a);
      w[i + 1] = f32_bits(b);
    } else {
      w[i / 2] = dtype == SKV_BF16 ? f32_to_bf16(a) | (uint32_t)f32_to_bf16(b) << 16 : f32_to_f16(a) | (uint32_t)f32_to_f16(b) << 16;
    }
  }
  const int words = dtype == SKV_F32 ? 4 : 2;
#pragma unroll
  for (int k = 0; k < 4; k++)
    if (k < words) out[k] = make_uint4(w[4 * k], w[4 * k + 1], w[4 * k + 2], w[4 * k + 3]);
  return words;
}

// The scale exponent byte of value j's row in an fp8 chunk of C rows of d values.
__device__ __forceinline__ const int8_t* fp8_scale_of(const void* chunk, int C, int d, size_t j) {
  return static_cast<const int8_t*>(chunk) + (size_t)C * d + j / d;
}

// Element j of an fp8 chunk of C rows of d values, dequantized (the path for d not a multiple of 16).
__device__ __forceinline__ float fp8_chunk_value(const uint8_t* chunk, int C, int d, size_t j) {
  return fp8_dequantize(chunk[j], *fp8_scale_of(chunk, C, d, j));
}
