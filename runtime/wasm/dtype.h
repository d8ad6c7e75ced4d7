// Storage dtypes <-> f32. All conversions round to nearest even and keep subnormals, inf and NaN.
// Written as branch-free bit tricks (after Maratos' FP16 library) so compilers vectorize the row loops.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "abi.h"

static inline uint32_t f32_bits(float f) { uint32_t w; memcpy(&w, &f, 4); return w; }
static inline float bits_f32(uint32_t w) { float f; memcpy(&f, &w, 4); return f; }

static inline size_t dtype_size(int dtype) { return dtype == SKV_F32 ? 4 : 2; }

// Element i of a buffer of the given dtype, as a byte address.
static inline const void* dtype_at(const void* base, int dtype, size_t i) {
  return (const char*)base + i * dtype_size(dtype);
}

// bf16 is the top half of an f32: a 16-bit shift.
static inline float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

static inline uint16_t f32_to_bf16(float f) {
  uint32_t w = f32_bits(f);
  // NOTE: NaN stays NaN (quiet bit set) instead of rounding into inf.
  if ((w & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((w >> 16) | 0x40u);
  return (uint16_t)((w + 0x7fffu + ((w >> 16) & 1u)) >> 16);
}

static inline float f16_to_f32(uint16_t h) {
  uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
  // Normal: re-bias the exponent by 2^112 (exact); subnormal: add 0.5 magic then subtract it.
  float normal = bits_f32((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  float denormal = bits_f32((two_w >> 17) | (126u << 23)) - 0.5f;
  uint32_t r = two_w < (1u << 27) ? f32_bits(denormal) : f32_bits(normal);
  return bits_f32(sign | r);
}

static inline uint16_t f32_to_f16(float f) {
  // Scale up then down so that the final add rounds the mantissa at f16 precision (RNE),
  // overflowing to inf and landing in the subnormal range by itself.
  float base = (__builtin_fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
  uint32_t w = f32_bits(f), shl1_w = w + w, sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = bits_f32((bias >> 1) + 0x07800000u) + base;
  uint32_t bits = f32_bits(base);
  uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
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
