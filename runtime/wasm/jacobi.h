// Symmetric eigendecomposition by cyclic Jacobi rotations in float64 (Numerical Recipes' jacobi).
// Only used on the small Rayleigh-Ritz matrix of low_rank_keys: (rank + oversample)^2 entries.
#pragma once
#include <math.h>
#include <string.h>

// A [n x n] symmetric (destroyed) = V diag(w) V^T; eigenvector i is row i of Vt [n x n]. Unsorted.
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
