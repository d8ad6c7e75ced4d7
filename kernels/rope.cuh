// The rotation of one RoPE pair, shared by rope.cu and rebuild_keys.cu.
#pragma once
#include <stdint.h>
#include "launchers.h"

// cos and sin of pos * inv_freq, computed in float64 and rounded once to f32.
__device__ __forceinline__ void rope_rotation(int64_t pos, double inv_freq, float* c, float* s) {
  double sn, cs;
  sincos((double)pos * inv_freq, &sn, &cs);
  *c = (float)cs;
  *s = (float)sn;
}

// Pair i of a row: x1' = x1 c - x2 s, x2' = x2 c + x1 s (s already times the direction).
// HALF pairs (i, i + half); INTERLEAVED pairs (2i, 2i + 1).
__device__ __forceinline__ void rope_rotate(float* row, int half, int i, int style, float c, float s) {
  float* p1 = style == SKV_ROPE_INTERLEAVED ? row + 2 * i : row + i;
  float* p2 = style == SKV_ROPE_INTERLEAVED ? row + 2 * i + 1 : row + half + i;
  float a = *p1, b = *p2;
  // NOTE: _rn intrinsics: no FMA contraction, so every kernel that rotates (rope.cu, the fused
  // step's append and compaction) rounds the same way, whatever the compiler does around it.
  *p1 = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
  *p2 = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}
