// Values on the host tier in fp8 (E4M3, OCP "E4M3FN": 4 exponent bits, bias 7, 3 mantissa bits,
// no infinities, largest 448) with one power-of-two scale per token row, so that dequantization is
// exact in f32 (a product by 2^e) and the only rounding is the encoding's. A chunk of C token rows
// of d values is C * d code bytes, then C scale exponents (int8), padded to 16 bytes: 1040 bytes
// at C 8, d 128, against 2048 in bf16. The scalar functions serve the wasm runtime and the CUDA
// kernels alike (kernels/fp8.cuh), as half.h's conversions do, so both write and read the same bits.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "half.h"

enum { FP8_MAX_CODE = 0x7e, FP8_NAN = 0x7f, FP8_MIN_SCALE = -126 };

// Bytes of one chunk of C rows of d values.
SKV_HALF size_t fp8_chunk_bytes(int C, int d) { return ((size_t)C * d + C + 15) / 16 * 16; }

// 2^e as an f32, for e in [-126, 127] (a normal number: a product by it is exact or correctly rounded).
SKV_HALF float fp8_pow2(int e) { return bits_f32((uint32_t)(e + 127) << 23); }

// The code nearest x (ties to even), for |x| <= 448 (larger magnitudes saturate to 448; NaN -> NaN).
SKV_HALF uint8_t fp8_encode(float x) {
  const uint8_t sign = (uint8_t)((f32_bits(x) >> 24) & 0x80);
  if (x != x) return FP8_NAN;
  const float a = half_abs(x);
  if (!(a < 464.f)) return sign | FP8_MAX_CODE;  // 448 and everything that rounds past it
  if (a < 0x1p-6f) {
    // Subnormals: multiples of 2^-9; rint rounds ties to even.
    const int m = (int)rintf(half_mul(a, 512.f));  // 0 .. 8 (8 is the smallest normal, 2^-6)
    return sign | (uint8_t)m;
  }
  int e;
  const float f = frexpf(a, &e);           // a = f * 2^e, f in [0.5, 1)
  int m = (int)rintf(half_mul(f, 16.f));  // 8 .. 16: 1.mmm with 3 mantissa bits
  int be = e - 1 + 7;                      // biased exponent of 1.mmm * 2^(e-1)
  if (m == 16) m = 8, be++;
  return sign | (uint8_t)(be << 3) | (uint8_t)(m - 8);
}

// The code's value: 1.mmm * 2^(be - 7), or m * 2^-9 where be is 0 (bits, no arithmetic).
SKV_HALF float fp8_decode(uint8_t c) {
  const uint32_t be = (c >> 3) & 15u, m = c & 7u, sign = (uint32_t)(c & 0x80) << 24;
  if ((c & 0x7f) == FP8_NAN) return bits_f32(sign | 0x7fc00000u);
  const float a = be ? bits_f32(((be + 120u) << 23) | (m << 20)) : half_mul((float)m, 0x1p-9f);
  return bits_f32(sign | f32_bits(a));
}

// The scale exponent of a row whose largest magnitude is amax: the smallest e with amax * 2^-e <=
// 448 (448 = 0.875 * 2^9), at least FP8_MIN_SCALE (all-zero rows take that).
SKV_HALF int fp8_scale(float amax) {
  if (!(amax > 0.f)) return FP8_MIN_SCALE;
  int k;
  const float f = frexpf(amax, &k);
  const int e = k - 9 + (f > 0.875f);
  return e < FP8_MIN_SCALE ? FP8_MIN_SCALE : e;
}

// A row's value x as a code under scale e, and a code back under e (exact: code * 2^e).
SKV_HALF uint8_t fp8_quantize(float x, int e) { return fp8_encode(half_mul(x, fp8_pow2(-e))); }
SKV_HALF float fp8_dequantize(uint8_t c, int e) { return half_mul(fp8_decode(c), fp8_pow2(e)); }

#ifndef __CUDA_ARCH__
// One chunk: rows [C x d] of f32 values into `out` (fp8_chunk_bytes(C, d) bytes, padding zeroed).
static inline void fp8_quantize_chunk(const float* rows, int C, int d, uint8_t* out) {
  memset(out, 0, fp8_chunk_bytes(C, d));
  int8_t* scales = (int8_t*)(out + (size_t)C * d);
  for (int t = 0; t < C; t++) {
    const float* r = rows + (size_t)t * d;
    float amax = 0.f;
    for (int i = 0; i < d; i++) amax = fabsf(r[i]) > amax ? fabsf(r[i]) : amax;
    const int e = fp8_scale(amax);
    scales[t] = (int8_t)e;
    for (int i = 0; i < d; i++) out[(size_t)t * d + i] = fp8_quantize(r[i], e);
  }
}

// One chunk back to f32 rows [C x d].
static inline void fp8_dequantize_chunk(const uint8_t* in, int C, int d, float* rows) {
  const int8_t* scales = (const int8_t*)(in + (size_t)C * d);
  for (int t = 0; t < C; t++)
    for (int i = 0; i < d; i++) rows[(size_t)t * d + i] = fp8_dequantize(in[(size_t)t * d + i], scales[t]);
}
#endif
