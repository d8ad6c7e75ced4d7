// The float64 host steps of the low-rank factorization, shared by the wasm runtime
// (low_rank_keys.cc) and the CUDA one (kernels/low_rank_keys.cu) so that both draw the same Omega
// and orthonormalize, solve and order eigenpairs the same way.
#pragma once
#include <math.h>
#include <stdint.h>
#include <algorithm>
#include <cmath>
#include "jacobi.h"

static inline double ddot(const double* a, const double* b, int n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4) { s0 += a[i] * b[i]; s1 += a[i + 1] * b[i + 1]; s2 += a[i + 2] * b[i + 2]; s3 += a[i + 3] * b[i + 3]; }
  for (; i < n; i++) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

static inline double ddot_mixed(const double* a, const float* b, int n) {
  double s0 = 0, s1 = 0;
  int i = 0;
  for (; i + 2 <= n; i += 2) { s0 += a[i] * b[i]; s1 += a[i + 1] * b[i + 1]; }
  for (; i < n; i++) s0 += a[i] * b[i];
  return s0 + s1;
}

// Deterministic uniform(-1, 1) from splitmix64, so every runtime build draws the same Omega.
static inline double uniform(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (double)(z >> 11) * 0x1.0p-52 - 1.0;
}

// Q [l x D] (float64, one basis vector per row) = orthonormal basis of the rows of X [l x D].
// Modified Gram-Schmidt run twice ("twice is enough"); a column that vanishes (S < l, or K = 0)
// is replaced by a random direction so Q stays orthonormal.
static inline void orthonormalize(const float* X, int l, int D, double* Q, uint64_t& rng) {
  for (int j = 0; j < l; j++) {
    double* q = Q + (size_t)j * D;
    for (int k = 0; k < D; k++) q[k] = X[(size_t)j * D + k];
    for (int attempt = 0; attempt < 8; attempt++) {
      double n0 = sqrt(ddot(q, q, D));
      for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < j; i++) {
          const double* qi = Q + (size_t)i * D;
          double r = ddot(qi, q, D);
          for (int k = 0; k < D; k++) q[k] -= r * qi[k];
        }
      double n1 = sqrt(ddot(q, q, D));
      if (n1 > 1e-12 * n0 && n1 > 0 && std::isfinite(n1)) {
        for (int k = 0; k < D; k++) q[k] /= n1;
        break;
      }
      for (int k = 0; k < D; k++) q[k] = uniform(rng);
    }
  }
}

// Rayleigh-Ritz: T [l x l] (destroyed) = W diag(w) W^T; ord lists eigenpairs by w descending and
// rows i < m of R [m x D] = sum_a W[a][ord[i]] B[a] (the Ritz vectors of basis rows B [l x D]).
static inline void ritz(double* T, int l, const double* B, int D, int m, double* Wt, double* w, int* ord, double* R) {
  for (int a = 0; a < l; a++)
    for (int b = 0; b < a; b++) T[(size_t)a * l + b] = T[(size_t)b * l + a] = 0.5 * (T[(size_t)a * l + b] + T[(size_t)b * l + a]);
  jacobi_eigen(T, l, Wt, w);
  for (int i = 0; i < l; i++) ord[i] = i;
  std::sort(ord, ord + l, [&](int a, int b) { return w[a] > w[b] || (w[a] == w[b] && a < b); });
  for (int i = 0; i < m; i++) {
    double* r = R + (size_t)i * D;
    const double* e = Wt + (size_t)ord[i] * l;
    for (int k = 0; k < D; k++) r[k] = 0;
    for (int a = 0; a < l; a++)
      for (int k = 0; k < D; k++) r[k] += e[a] * B[(size_t)a * D + k];
  }
}

// The power of two that brings max|K| into [0.5, 1): amax = m 2^e, m in [0.5, 1). Clamped so
// that 2^e and 2^-e are normal floats (keys beyond that range are scaled part of the way).
static inline int scale_exponent(float amax) {
  if (amax == 0.f) return 0;  // all-zero keys: nothing to scale, the factorization gives zeros
  int e;
  frexpf(amax, &e);
  return std::max(-125, std::min(125, e));
}
