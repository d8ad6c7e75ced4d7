// f32 <-> f16 and bf16 bits, for the wasm runtime, the CUDA addon's host code and the CUDA kernels
// (kernels/dtype.cuh): one definition, so every runtime rounds alike. All conversions round to
// nearest even and keep subnormals, inf and NaN. Written as branch-free bit tricks (after Maratos'
// FP16 library) so compilers vectorize the row loops. Apart from dtype.h (which adds the ABI's
// dtype codes) because the CUDA code takes its dtype codes from kernels/launchers.h.
#pragma once
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define SKV_HALF __host__ __device__ __forceinline__
#else
#define SKV_HALF static inline
#endif

// The float steps below, each one rounding. NOTE: on the device the _rn intrinsics keep nvcc from
// contracting a product and a sum into an FMA, which would round differently from the wasm code.
#ifdef __CUDA_ARCH__
SKV_HALF uint32_t f32_bits(float f) { return __float_as_uint(f); }
SKV_HALF float bits_f32(uint32_t w) { return __uint_as_float(w); }
SKV_HALF float half_mul(float a, float b) { return __fmul_rn(a, b); }
SKV_HALF float half_add(float a, float b) { return __fadd_rn(a, b); }
SKV_HALF float half_sub(float a, float b) { return __fsub_rn(a, b); }
SKV_HALF float half_abs(float a) { return fabsf(a); }
#else
SKV_HALF uint32_t f32_bits(float f) { uint32_t w; memcpy(&w, &f, 4); return w; }
SKV_HALF float bits_f32(uint32_t w) { float f; memcpy(&f, &w, 4); return f; }
SKV_HALF float half_mul(float a, float b) { return a * b; }
SKV_HALF float half_add(float a, float b) { return a + b; }
SKV_HALF float half_sub(float a, float b) { return a - b; }
SKV_HALF float half_abs(float a) { return __builtin_fabsf(a); }
#endif

// bf16 is the top half of an f32: a 16-bit shift.
SKV_HALF float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

SKV_HALF uint16_t f32_to_bf16(float f) {
  uint32_t w = f32_bits(f);
  // NOTE: NaN stays NaN (quiet bit set) instead of rounding into inf.
  if ((w & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((w >> 16) | 0x40u);
  return (uint16_t)((w + 0x7fffu + ((w >> 16) & 1u)) >> 16);
}

SKV_HALF float f16_to_f32(uint16_t h) {
  uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
  // Normal: re-bias the exponent by 2^112 (exact); subnormal: add 0.5 magic then subtract it.
  float normal = half_mul(bits_f32((two_w >> 4) + (0xE0u << 23)), 0x1.0p-112f);
  float denormal = half_sub(bits_f32((two_w >> 17) | (126u << 23)), 0.5f);
  uint32_t r = two_w < (1u << 27) ? f32_bits(denormal) : f32_bits(normal);
  return bits_f32(sign | r);
}

SKV_HALF uint16_t f32_to_f16(float f) {
  // Scale up then down so that the final add rounds the mantissa at f16 precision (RNE),
  // overflowing to inf and landing in the subnormal range by itself.
  float base = half_mul(half_mul(half_abs(f), 0x1.0p+112f), 0x1.0p-110f);
  uint32_t w = f32_bits(f), shl1_w = w + w, sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = half_add(bits_f32((bias >> 1) + 0x07800000u), base);
  uint32_t bits = f32_bits(base);
  uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}
