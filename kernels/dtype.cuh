// Storage dtypes <-> f32 on the device, bit for bit as runtime/wasm/half.h: round to nearest even,
// subnormals, inf and NaN kept (NaN -> quiet NaN). The float steps use _rn intrinsics so that
// nvcc cannot contract them into FMAs (which would round differently from the wasm code).
#pragma once
#include <stdint.h>
#include "launchers.h"

__device__ __forceinline__ float skv_bits_f32(uint32_t w) { return __uint_as_float(w); }
__device__ __forceinline__ uint32_t skv_f32_bits(float f) { return __float_as_uint(f); }

// bf16 is the top half of an f32: a 16-bit shift.
__device__ __forceinline__ float bf16_to_f32(uint16_t h) { return skv_bits_f32((uint32_t)h << 16); }

__device__ __forceinline__ uint16_t f32_to_bf16(float f) {
  uint32_t w = skv_f32_bits(f);
  // NOTE: NaN stays NaN (quiet bit set) instead of rounding into inf.
  if ((w & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((w >> 16) | 0x40u);
  return (uint16_t)((w + 0x7fffu + ((w >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float f16_to_f32(uint16_t h) {
  uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
  // Normal: re-bias the exponent by 2^112 (exact); subnormal: add 0.5 magic then subtract it.
  float normal = __fmul_rn(skv_bits_f32((two_w >> 4) + (0xE0u << 23)), 0x1.0p-112f);
  float denormal = __fsub_rn(skv_bits_f32((two_w >> 17) | (126u << 23)), 0.5f);
  uint32_t r = two_w < (1u << 27) ? skv_f32_bits(denormal) : skv_f32_bits(normal);
  return skv_bits_f32(sign | r);
}

__device__ __forceinline__ uint16_t f32_to_f16(float f) {
  // Scale up then down so that the final add rounds the mantissa at f16 precision (RNE),
  // overflowing to inf and landing in the subnormal range by itself.
  float base = __fmul_rn(__fmul_rn(fabsf(f), 0x1.0p+112f), 0x1.0p-110f);
  uint32_t w = skv_f32_bits(f), shl1_w = w + w, sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = __fadd_rn(skv_bits_f32((bias >> 1) + 0x07800000u), base);
  uint32_t bits = skv_f32_bits(base);
  uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

__device__ __forceinline__ size_t skv_dtype_size(int dtype) { return dtype == SKV_F32 ? 4 : 2; }

// Element i of a buffer of the given dtype, as f32.
__device__ __forceinline__ float load_f32(const void* base, int dtype, size_t i) {
  if (dtype == SKV_F32) return static_cast<const float*>(base)[i];
  uint16_t h = static_cast<const uint16_t*>(base)[i];
  return dtype == SKV_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// Element i of a buffer of the given dtype = v rounded to it.
__device__ __forceinline__ void store_f32(void* base, int dtype, size_t i, float v) {
  if (dtype == SKV_F32) {
    static_cast<float*>(base)[i] = v;
    return;
  }
  static_cast<uint16_t*>(base)[i] = dtype == SKV_BF16 ? f32_to_bf16(v) : f32_to_f16(v);
}

// Copies element i between two buffers: same dtype copies the bits (NaN payloads too), else converts.
__device__ __forceinline__ void convert_elem(const void* src, int src_dtype, size_t si, void* dst, int dst_dtype, size_t di) {
  if (src_dtype == dst_dtype) {
    if (src_dtype == SKV_F32) static_cast<uint32_t*>(dst)[di] = static_cast<const uint32_t*>(src)[si];
    else static_cast<uint16_t*>(dst)[di] = static_cast<const uint16_t*>(src)[si];
    return;
  }
  store_f32(dst, dst_dtype, di, load_f32(src, src_dtype, si));
}

// Eight 16-bit elements (one 16-byte word) as f32. NOTE: the dtype is tested once, outside the
// element loop: a test per element had the compiler convert every element both ways and select
// (the f16 path is ~10 instructions), which made the landmark scan and attention compute-bound.
__device__ __forceinline__ void unpack8_16bit(const uint4 w, int dtype, float* x) {
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
  if (dtype == SKV_BF16) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      x[2 * i] = skv_bits_f32(words[i] << 16);
      x[2 * i + 1] = skv_bits_f32(words[i] & 0xffff0000u);
    }
  } else {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      x[2 * i] = f16_to_f32((uint16_t)(words[i] & 0xffffu));
      x[2 * i + 1] = f16_to_f32((uint16_t)(words[i] >> 16));
    }
  }
}
