// The float64 host steps of low_rank_keys before the blocked rewrite (runtime/wasm/subspace.h and
// jacobi.h at 446fb88..2d4f16f): per-row modified Gram-Schmidt twice, ddot_mixed for Q^T X, cyclic
// Jacobi. Kept only so that bench/native/low_rank_host.cc can time old against new in one run.
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <algorithm>
#include <cmath>

namespace v1 {
static inline void jacobi_eigen(double* A, int n, double* Vt, double* w) {
  memset(Vt, 0, sizeof(double) * n * n);
  for (int i = 0; i < n; i++) Vt[i * n + i] = 1.0;
  for (int sweep = 0; sweep < 60; sweep++) {
    double off = 0, all = 0;
    for (int p = 0; p < n; p++)
      for (int q = 0; q < n; q++) {
        double a2 = A[p * n + q] * A[p * n + q];
        all += a2;
        if (p != q) off += a2;
      }
    if (off <= 1e-30 * all) break;  // off-diagonal mass below float64 resolution
    for (int p = 0; p < n - 1; p++)
      for (int q = p + 1; q < n; q++) {
        double apq = A[p * n + q], app = A[p * n + p], aqq = A[q * n + q];
        // A rotation that changes the diagonal by less than an ulp only costs time.
        if (fabs(apq) <= 1e-18 * (fabs(app) + fabs(aqq)) || fabs(apq) < 1e-300) {
          A[p * n + q] = A[q * n + p] = 0;
          continue;
        }
        double theta = (aqq - app) / (2 * apq);
        double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1));
        double c = 1 / sqrt(t * t + 1), s = t * c;
        // Rows p and q of J^T A; symmetry gives the columns, the 2x2 block has a closed form.
        double* rp = A + (size_t)p * n;
        double* rq = A + (size_t)q * n;
        for (int k = 0; k < n; k++) {
          double akp = rp[k], akq = rq[k];
          rp[k] = c * akp - s * akq;
          rq[k] = s * akp + c * akq;
        }
        for (int k = 0; k < n; k++) { A[k * n + p] = rp[k]; A[k * n + q] = rq[k]; }
        rp[p] = app - t * apq; rq[q] = aqq + t * apq;
        rp[q] = rq[p] = 0;
        double* vp = Vt + (size_t)p * n;
        double* vq = Vt + (size_t)q * n;
        for (int k = 0; k < n; k++) {
          double a = vp[k], b = vq[k];
          vp[k] = c * a - s * b;
          vq[k] = s * a + c * b;
        }
      }
  }
  for (int i = 0; i < n; i++) w[i] = A[i * n + i];
}

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

}  // namespace v1
