// Storage dtypes <-> f32, over rows: the element conversions are half.h's.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "abi.h"
#include "half.h"

static inline size_t dtype_size(int dtype) { return dtype == SKV_F32 ? 4 : 2; }

// Element i of a buffer of the given dtype, as a byte address.
static inline const void* dtype_at(const void* base, int dtype, size_t i) {
  return (const char*)base + i * dtype_size(dtype);
}

// Element i of a buffer of the given dtype, as f32.
static inline float elem_f32(const void* x, int dtype, size_t i) {
  if (dtype == SKV_F32) return ((const float*)x)[i];
  const uint16_t h = ((const uint16_t*)x)[i];
  return dtype == SKV_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// dst[0:n] = src[0:n] as f32.
static inline void load_f32(const void* src, int dtype, size_t n, float* dst) {
  if (dtype == SKV_F32) { memcpy(dst, src, n * 4); return; }
  const uint16_t* s = (const uint16_t*)src;
  if (dtype == SKV_BF16) for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(s[i]);
  else for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(s[i]);
}

// dst[0:n] = src[0:n] rounded to dtype.
static inline void store_f32(const float* src, void* dst, int dtype, size_t n) {
  if (dtype == SKV_F32) { memmove(dst, src, n * 4); return; }
  uint16_t* d = (uint16_t*)dst;
  if (dtype == SKV_BF16) for (size_t i = 0; i < n; i++) d[i] = f32_to_bf16(src[i]);
  else for (size_t i = 0; i < n; i++) d[i] = f32_to_f16(src[i]);
}
