// The GEMM register tile: a 4 x 8 block of C held in eight 4-lane accumulators while one packed
// A sliver (4 rows) and one packed B sliver (8 columns) stream through. Used by skv_gemm, which
// every matrix product of the runtime (Gram, subspace iteration, U = K proj, rebuild) goes through.
#pragma once
#include "simd.h"

enum { GEMM_MR = 4, GEMM_NR = 8 };
// Cache blocking: an A block [MC x KC] stays in L2, a B sliver [KC x NR] in L1.
enum { GEMM_MC = 128, GEMM_KC = 256, GEMM_NC = 1024 };

// C[m x n] (m <= 4, n <= 8) = alpha * a[4 x kc] * b[kc x 8] + beta * C; beta = 0 ignores C.
// a: packed column-by-column (4 floats per k), b: packed row-by-row (8 floats per k).
static inline void gemm_micro_4x8(int kc, const float* a, const float* b, float* c, int ldc,
                                  int m, int n, float alpha, float beta) {
  f32x4 c00 = vsplat(0.f), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (int p = 0; p < kc; p++, a += 4, b += 8) {
    f32x4 b0 = vload(b), b1 = vload(b + 4);
    f32x4 a0 = vsplat(a[0]), a1 = vsplat(a[1]);
    c00 = vfma(a0, b0, c00); c01 = vfma(a0, b1, c01);
    c10 = vfma(a1, b0, c10); c11 = vfma(a1, b1, c11);
    f32x4 a2 = vsplat(a[2]), a3 = vsplat(a[3]);
    c20 = vfma(a2, b0, c20); c21 = vfma(a2, b1, c21);
    c30 = vfma(a3, b0, c30); c31 = vfma(a3, b1, c31);
  }
  f32x4 acc[8] = {c00, c01, c10, c11, c20, c21, c30, c31};
  f32x4 va = vsplat(alpha), vb = vsplat(beta);
  if (m == GEMM_MR && n == GEMM_NR) {
    for (int r = 0; r < 4; r++) {
      float* cr = c + (size_t)r * ldc;
      f32x4 lo = vmul(va, acc[2 * r]), hi = vmul(va, acc[2 * r + 1]);
      if (beta != 0.f) { lo = vfma(vb, vload(cr), lo); hi = vfma(vb, vload(cr + 4), hi); }
      vstore(cr, lo); vstore(cr + 4, hi);
    }
    return;
  }
  // Edge tile: spill the accumulators and write only the m x n corner.
  float t[32];
  for (int i = 0; i < 8; i++) vstore(t + 4 * i, acc[i]);
  for (int r = 0; r < m; r++)
    for (int j = 0; j < n; j++) {
      float* cij = c + (size_t)r * ldc + j;
      *cij = alpha * t[r * 8 + j] + (beta != 0.f ? beta * *cij : 0.f);
    }
}
