// Symmetric eigendecomposition in float64: Householder reduction to tridiagonal form, then the
// implicit QL iteration with Wilkinson shifts (EISPACK's tred2 + tql2, as in JAMA), O(n^3) once.
// Only used on the small Rayleigh-Ritz matrix of low_rank_keys: (rank + oversample)^2 entries.
// NOTE: eigenvectors are kept as rows (Vt), so every Householder update and every QL rotation runs
// along contiguous memory; only +, -, *, / and sqrt are used (no libm), so builds without fused
// multiply-adds (wasm, the addon's baseline x86-64) get the same bits. The two O(n^3) parts that do
// not feed the iteration (forming Q, rotating the eigenvectors) run as HostTasks over column blocks;
// the reduction itself on one thread.
#pragma once
#include <math.h>
#include <string.h>
#include <algorithm>
#include "host_tasks.h"

// a . b over n entries in 4 interleaved partial sums (so the loop vectorizes), added pairwise.
static inline double eigen_dot(const double* a, const double* b, int n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4) { s0 += a[i] * b[i]; s1 += a[i + 1] * b[i + 1]; s2 += a[i + 2] * b[i + 2]; s3 += a[i + 3] * b[i + 3]; }
  for (; i < n; i++) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

// Two float64 lanes: SSE2 on x86-64 (the CUDA addon's host code), wasm SIMD under -msimd128, and
// scalar code in the plain wasm build; GCC and clang both take the vector extension.
typedef double f64x2 __attribute__((vector_size(16)));
static inline f64x2 load2(const double* p) {
  f64x2 v;
  memcpy(&v, p, sizeof v);
  return v;
}
static inline f64x2 load2(const float* p) { return f64x2{(double)p[0], (double)p[1]}; }
static inline void store2(double* p, f64x2 v) { memcpy(p, &v, sizeof v); }
static inline f64x2 splat2(double a) { return f64x2{a, a}; }

// sqrt(a^2 + b^2) without overflow or underflow (EISPACK's pythag, with plain sqrt).
static inline double eigen_hypot(double a, double b) {
  a = fabs(a), b = fabs(b);
  double big = a > b ? a : b, small = a > b ? b : a;
  if (big == 0) return 0;
  double t = small / big;
  return big * sqrt(1 + t * t);
}

enum { EIGEN_COLUMNS = 32 };  // columns of Qt or Vt per task

// A [n x n] symmetric (destroyed) = Q T Q^T with T tridiagonal: d [n] its diagonal, e [n] its
// off-diagonal (e[i] = T[i][i+1], e[n-1] = 0). Householder reflections H_k = I - v v^T / h zero
// column k below the subdiagonal, k = 0 .. n-3; v is kept in row k of A, h in A[k][k] (0: none),
// for householder_q. Only A's lower triangle is read and updated (what stays symmetric is computed
// once). p: scratch [n].
static inline void tridiagonalize(double* A, int n, double* d, double* e, double* p) {
  for (int k = 0; k + 2 < n; k++) {
    double* v = A + (size_t)k * n;  // row k takes column k: the reflection acts on entries k+1 .. n-1
    for (int i = k + 1; i < n; i++) v[i] = A[(size_t)i * n + k];
    d[k] = v[k];
    double scale = 0;
    for (int i = k + 1; i < n; i++) scale += fabs(v[i]);
    v[k] = 0;  // no reflection (h = 0) unless the column below the subdiagonal is nonzero
    e[k] = v[k + 1];
    if (scale == 0) continue;
    double s2 = 0;
    for (int i = k + 1; i < n; i++) { v[i] /= scale; s2 += v[i] * v[i]; }
    double f = v[k + 1], g = f >= 0 ? -sqrt(s2) : sqrt(s2), h = s2 - f * g;
    v[k + 1] = f - g;
    e[k] = scale * g;
    v[k] = h;  // H = I - v v^T / h, v = entries k+1 .. n-1
    // p = A v / h over the trailing block's lower triangle (row i's entries j < i also give p_j
    // theirs), then w = p - (v . p) v / (2h), and A -= v w^T + w v^T on that triangle.
    // NOTE: one thread: a column's loops are microseconds of work at n = 176, and handing them to
    // host threads (two hand-offs per column) cost more than it saved. The lower triangle does 3 of
    // the 5 t^2 multiply-adds of both: at n = 176, 0.9 -> 0.62 ms on the build machine, 2.29 -> 0.92
    // on the H200 machine's host (bench/NOTES.md v20).
    for (int i = k + 1; i < n; i++) p[i] = 0;
    for (int i = k + 1; i < n; i++) {
      const double* a = A + (size_t)i * n;
      const double vi = v[i];
      const f64x2 vi2 = splat2(vi);
      f64x2 s2 = splat2(0);
      int j = k + 1;
      for (; j + 2 <= i; j += 2) {
        const f64x2 aj = load2(a + j);
        s2 += aj * load2(v + j);
        store2(p + j, load2(p + j) + aj * vi2);
      }
      double s0 = s2[0];
      if (j < i) s0 += a[j] * v[j], p[j] += a[j] * vi;
      p[i] += (s0 + s2[1]) + a[i] * vi;
    }
    double vp = 0;
    for (int i = k + 1; i < n; i++) p[i] /= h, vp += v[i] * p[i];
    const double c = vp / (2 * h);
    for (int i = k + 1; i < n; i++) p[i] -= c * v[i];
    for (int i = k + 1; i < n; i++) {
      double* a = A + (size_t)i * n;
      const f64x2 vi = splat2(v[i]), pi = splat2(p[i]);
      int j = k + 1;
      for (; j + 2 <= i + 1; j += 2) store2(a + j, load2(a + j) - (vi * load2(p + j) + pi * load2(v + j)));
      if (j <= i) a[j] -= v[i] * p[j] + p[i] * v[j];
    }
  }
  for (int i = n < 2 ? 0 : n - 2; i < n; i++) d[i] = A[(size_t)i * n + i];  // the last 2x2 block is T's
  if (n >= 2) e[n - 2] = A[(size_t)(n - 1) * n + n - 2];
  e[n - 1] = 0;
}

// Qt [n x n] = Q^T = (H_0 H_1 ... H_{n-3})^T from the rows tridiagonalize left in A: column j of Q
// (row j of Qt) is e_j with H_k applied for k = j-1 .. 0 (H_k leaves e_j alone for j <= k).
// Columns are independent: one task per block of them. (kernels/eigenvectors.cuh: the same on a GPU.)
static inline void householder_q(const double* A, int n, double* Qt, const HostTasks& tasks) {
  tasks.ranges(n, EIGEN_COLUMNS, [&](int j0, int j1) {
    for (int j = j0; j < j1; j++) {
      double* q = Qt + (size_t)j * n;
      memset(q, 0, sizeof(double) * n);
      q[j] = 1;
      for (int k = std::min(j - 1, n - 3); k >= 0; k--) {
        const double* v = A + (size_t)k * n;
        const double h = v[k];
        if (h == 0) continue;
        const double s = eigen_dot(v + k + 1, q + k + 1, n - k - 1) / h;
        for (int i = k + 1; i < n; i++) q[i] -= s * v[i];
      }
    }
  });
}

// Rows i and i+1 of Vt [n x n] rotated by each logged (i, c, s) in order: columns i and i+1 of the
// eigenvector matrix. Each task takes a block of columns through every rotation.
static inline void rotate_rows(double* Vt, int n, const double* log, int count, const HostTasks& tasks) {
  tasks.ranges(n, EIGEN_COLUMNS, [&](int k0, int k1) {
    for (int r = 0; r < count; r++) {
      const double* g = log + 3 * r;
      const double c = g[1], s = g[2];
      double* a = Vt + (size_t)g[0] * n;
      double* b = a + n;
      for (int k = k0; k < k1; k++) {
        const double x = a[k], y = b[k];
        b[k] = s * x + c * y;
        a[k] = c * x - s * y;
      }
    }
  });
}

// Eigenvalues d [n] of the tridiagonal (d, e): the implicit QL iteration (tql2). Its rotations do
// not feed back into (d, e), so they are logged (i, c, s) in log [3 * cap] and handed over a log at
// a time, in order, to apply(log, count), which rotates the eigenvectors (rotate_rows on the Q^T
// of the reduction gives them as rows).
// NOTE: an eigenvalue gets at most 60 iterations (LAPACK allows 30; a few is typical), so a NaN
// cannot loop forever.
template <class Apply>
static inline void tridiagonal_ql(double* d, double* e, int n, double* log, int cap, const Apply& apply) {
  const double eps = 0x1p-52;
  double shift = 0, tst = 0;
  int logged = 0;
  for (int l = 0; l < n; l++) {
    tst = fmax(tst, fabs(d[l]) + fabs(e[l]));
    int m = l;
    while (m < n - 1 && fabs(e[m]) > eps * tst) m++;  // e[n-1] = 0 ends the search
    for (int iter = 0; m > l && iter < 60; iter++) {
      if (logged + (m - l) > cap) {
        apply(log, logged);
        logged = 0;
      }
      // Wilkinson-like shift from the leading 2x2 block, then one QL sweep from m up to l.
      double g = d[l], p = (d[l + 1] - g) / (2 * e[l]);
      double r = eigen_hypot(p, 1.0);
      if (p < 0) r = -r;
      d[l] = e[l] / (p + r);
      d[l + 1] = e[l] * (p + r);
      const double dl1 = d[l + 1];
      double h = g - d[l];
      for (int i = l + 2; i < n; i++) d[i] -= h;
      shift += h;
      p = d[m];
      double c = 1, c2 = 1, c3 = 1, s = 0, s2 = 0;
      const double el1 = e[l + 1];
      for (int i = m - 1; i >= l; i--) {
        c3 = c2; c2 = c; s2 = s;
        g = c * e[i];
        h = c * p;
        r = eigen_hypot(p, e[i]);
        e[i + 1] = s * r;
        s = e[i] / r;
        c = p / r;
        p = c * d[i] - s * g;
        d[i + 1] = h + s * (c * g + s * d[i]);
        double* entry = log + 3 * logged++;
        entry[0] = i, entry[1] = c, entry[2] = s;
      }
      p = -s * s2 * c3 * el1 * e[l] / dl1;
      e[l] = s * p;
      d[l] = c * p;
      if (!(fabs(e[l]) > eps * tst)) break;
    }
    d[l] += shift;
    e[l] = 0;
  }
  apply(log, logged);
}

// Scratch (doubles) of symmetric_eigen for n x n: e, p and a rotation log of n * n entries.
static inline uint64_t eigen_work(int n) { return 2 * (uint64_t)n + 3 * (uint64_t)n * n; }

// A [n x n] symmetric (destroyed) = V diag(w) V^T; eigenvector i is row i of Vt [n x n]. Unsorted.
// work: eigen_work(n) doubles.
static inline void symmetric_eigen(double* A, int n, double* Vt, double* w, double* work, const HostTasks& tasks) {
  double *e = work, *log = work + 2 * n;
  tridiagonalize(A, n, w, e, work + n);
  householder_q(A, n, Vt, tasks);
  tridiagonal_ql(w, e, n, log, std::max(n * n, n), [&](const double* lg, int count) { rotate_rows(Vt, n, lg, count, tasks); });
}
