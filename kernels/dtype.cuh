// Storage dtypes <-> f32 on the device: element loads and stores over the conversions the wasm
// runtime uses too (runtime/wasm/half.h, compiled here for the device).
#pragma once
#include <stdint.h>
#include "../runtime/wasm/half.h"
#include "launchers.h"

// Element i of a buffer of the given dtype, as f32.
__device__ __forceinline__ float load_f32(const void* base, int dtype, size_t i) {
  if (dtype == SKV_F32) return static_cast<const float*>(base)[i];
  uint16_t h = static_cast<const uint16_t*>(base)[i];
  return dtype == SKV_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// The same, read from L2 (ld.global.cg): for rows another block of the launch may have written.
__device__ __forceinline__ float load_f32_cg(const void* base, int dtype, size_t i) {
  if (dtype == SKV_F32) return __ldcg(static_cast<const float*>(base) + i);
  const uint16_t h = __ldcg(static_cast<const unsigned short*>(base) + i);
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
      x[2 * i] = bits_f32(words[i] << 16);
      x[2 * i + 1] = bits_f32(words[i] & 0xffff0000u);
    }
  } else {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      x[2 * i] = f16_to_f32((uint16_t)(words[i] & 0xffffu));
      x[2 * i + 1] = f16_to_f32((uint16_t)(words[i] >> 16));
    }
  }
}
