// bf16 values on the host tier with their exponents packed (`packedValues`): lossless, so a fetch
// moves a quarter fewer bytes over PCIe and gives back the same bits. A chunk of n values keeps
// its raw slot (2n bytes); packed, it fills the first 1.5n:
//   bytes [0, n):        value j's sign and 7 mantissa bits (sign << 7 | mantissa),
//   bytes [n, n + n/2):  value j's exponent code in nibble j % 2 (low first) of byte n + j / 2.
// Code c < 15 is exponent field base - c; 15 is field 0 (zeros and subnormals). The base is the
// chunk's largest exponent field, kept apart from the pages (one byte a chunk, where the reader can
// have it before the chunk's bytes arrive). A chunk with an exponent below base - 14 (but not 0)
// or an inf/NaN stays raw, base PACK_RAW. The scalar functions serve the wasm runtime and the CUDA
// kernels alike (kernels/pack.cuh), as fp8.h's do.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "half.h"

enum { PACK_RAW = 0xff, PACK_ZERO = 15, PACK_SPAN = 14 };

// Where chunk c of head h keeps its base: bases run in page order, as the pages (page (c /
// page_chunks) * heads + h), page_chunks a page.
SKV_HALF size_t pack_index(int page_chunks, int heads, int h, int64_t c) {
  return ((size_t)(c / page_chunks) * heads + h) * page_chunks + (size_t)(c % page_chunks);
}

SKV_HALF int pack_exponent(uint16_t v) { return (v >> 7) & 0xff; }

// The largest exponent field over values with one (0 where all are zeros or subnormals).
SKV_HALF int pack_top(int top, uint16_t v) {
  const int e = pack_exponent(v);
  return e > top ? e : top;
}

// Whether value v fits a chunk of base `base`.
SKV_HALF bool pack_fits(uint16_t v, int base) {
  const int e = pack_exponent(v);
  return e == 0 || (e != 0xff && e >= base - PACK_SPAN);
}

// Value v's packed parts: its sign-and-mantissa byte and its exponent code under `base`.
SKV_HALF uint8_t pack_low(uint16_t v) { return (uint8_t)(((v >> 8) & 0x80) | (v & 0x7f)); }
SKV_HALF uint32_t pack_code(uint16_t v, int base) {
  const int e = pack_exponent(v);
  return e == 0 ? (uint32_t)PACK_ZERO : (uint32_t)(base - e);
}

// A value back from its two parts.
SKV_HALF uint16_t pack_value(uint32_t low, uint32_t code, int base) {
  const uint32_t e = code == PACK_ZERO ? 0u : (uint32_t)base - code;
  return (uint16_t)(((low & 0x80u) << 8) | (e << 7) | (low & 0x7fu));
}

// 8 values (a 16-byte word of bf16) from their 8 low bytes (lo0 | lo1 << 32, little-endian) and
// their 8 codes (one 32-bit word of nibbles): out[k] holds values 2k and 2k + 1.
SKV_HALF void pack_unpack8(uint32_t lo0, uint32_t lo1, uint32_t codes, int base, uint32_t out[4]) {
  for (int k = 0; k < 4; k++) {
    const uint32_t lo = k < 2 ? lo0 : lo1, s = 16 * (k % 2);
    out[k] = pack_value(lo >> s, (codes >> (8 * k)) & 15u, base) | (uint32_t)pack_value(lo >> (s + 8), (codes >> (8 * k + 4)) & 15u, base) << 16;
  }
}

// Value j (bits) of a chunk of n values stored under `base`.
SKV_HALF uint16_t pack_read(const uint8_t* chunk, size_t n, int base, size_t j) {
  if (base == PACK_RAW) {
    uint16_t v;
    memcpy(&v, chunk + 2 * j, 2);
    return v;
  }
  return pack_value(chunk[j], (chunk[n + j / 2] >> (4 * (j % 2))) & 15u, base);
}

#ifndef __CUDA_ARCH__
// One chunk of n bf16 values into `out` (its 2n-byte slot): packed where it fits, else
// copied. Returns its base (PACK_RAW: copied).
static inline int pack_chunk(const uint16_t* v, size_t n, uint8_t* out) {
  int base = 0;
  for (size_t j = 0; j < n; j++) base = pack_top(base, v[j]);
  for (size_t j = 0; j < n; j++) {
    if (!pack_fits(v[j], base)) {
      memcpy(out, v, 2 * n);
      return PACK_RAW;
    }
  }
  for (size_t j = 0; j < n; j++) out[j] = pack_low(v[j]);
  for (size_t j = 0; j < n; j += 2) out[n + j / 2] = (uint8_t)(pack_code(v[j], base) | (j + 1 < n ? pack_code(v[j + 1], base) << 4 : 0u));
  return base;
}
#endif
