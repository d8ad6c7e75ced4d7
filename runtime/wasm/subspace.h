// The float64 host steps of the low-rank factorization, shared by the wasm runtime
// (low_rank_keys.cc) and the CUDA one (kernels/low_rank_keys.cu) so that both draw the same Omega
// and orthonormalize, solve and order eigenpairs the same way. At one 128K-token Llama-3-8B layer
// they work on l x D = 176 x 1024 matrices: orthonormalize (x3), rayleigh_matrix, ritz.
// NOTE: the products are register-tiled loops over rows (contiguous in memory) that compilers
// vectorize; each output sums its terms in one fixed order whatever the tile, so the bits depend
// only on the inputs.
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <algorithm>
#include <cmath>
#include "host_tasks.h"
#include "symmetric_eigen.h"

// ---- float64 row products ----

static inline double ddot(const double* a, const double* b, int n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4) { s0 += a[i] * b[i]; s1 += a[i + 1] * b[i + 1]; s2 += a[i + 2] * b[i + 2]; s3 += a[i + 3] * b[i + 3]; }
  for (; i < n; i++) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

// C[r][c] (row stride ldc) = A_r . B_c for an MR x NR tile of rows of length D (strides lda, ldb).
// NOTE: every dot sums its even and its odd terms apart, then adds the two, whatever the tile.
template <int MR, int NR, class TB>
static inline void dot_tile(const double* A, size_t lda, const TB* B, size_t ldb, int D, double* C, int ldc) {
  f64x2 s[MR][NR];
  for (int r = 0; r < MR; r++)
    for (int c = 0; c < NR; c++) s[r][c] = splat2(0);
  int k = 0;
  for (; k + 2 <= D; k += 2) {
    f64x2 b[NR];
    for (int c = 0; c < NR; c++) b[c] = load2(B + c * ldb + k);
    for (int r = 0; r < MR; r++) {
      const f64x2 a = load2(A + r * lda + k);
      for (int c = 0; c < NR; c++) s[r][c] += a * b[c];
    }
  }
  for (int r = 0; r < MR; r++)
    for (int c = 0; c < NR; c++) {
      double t = s[r][c][0];
      if (k < D) t += A[r * lda + k] * (double)B[c * ldb + k];
      C[r * ldc + c] = t + s[r][c][1];
    }
}

// C [m x n] (row stride ldc) = A [m x D] B [n x D]^T: every dot product of a row of A with a row of B.
template <class TB>
static inline void row_dots(const double* A, int m, const TB* B, int n, int D, double* C, int ldc) {
  enum { MR = 4, NR = 2 };
  int j = 0;
  for (; j + NR <= n; j += NR) {  // two rows of B stay in L1 while the rows of A stream
    int i = 0;
    for (; i + MR <= m; i += MR) dot_tile<MR, NR>(A + (size_t)i * D, D, B + (size_t)j * D, D, D, C + (size_t)i * ldc + j, ldc);
    for (; i < m; i++) dot_tile<1, NR>(A + (size_t)i * D, D, B + (size_t)j * D, D, D, C + (size_t)i * ldc + j, ldc);
  }
  for (; j < n; j++) {
    int i = 0;
    for (; i + MR <= m; i += MR) dot_tile<MR, 1>(A + (size_t)i * D, D, B + (size_t)j * D, D, D, C + (size_t)i * ldc + j, ldc);
    for (; i < m; i++) dot_tile<1, 1>(A + (size_t)i * D, D, B + (size_t)j * D, D, D, C + (size_t)i * ldc + j, ldc);
  }
}

// C_j += sum_i W[i * wi + j * wj] B_i for rows j < n of C [n x width] and rows i < m of B [m x width]
// (row strides ldc, ldb), one i after the other (C updated in place, in order), so every entry is
// rounded the same way whatever the blocking. B is read 4 rows at a time, each block used by every
// row of C before the next.
static inline void combine_rows(const double* W, size_t wi, size_t wj, const double* B, size_t ldb, int m, int n,
                                int width, double* C, size_t ldc) {
  enum { IB = 4, NR = 4, V = 2 };  // 4 rows of B x 4 rows of C x 4 columns in registers
  for (int i0 = 0; i0 < m; i0 += IB) {
    const int ib = std::min((int)IB, m - i0);
    const double* b0 = B + i0 * ldb;
    for (int j0 = 0; j0 < n; j0 += NR) {
      const int nr = std::min((int)NR, n - j0);
      f64x2 w[IB][NR];
      for (int i = 0; i < IB; i++)
        for (int r = 0; r < NR; r++) w[i][r] = splat2(i < ib && r < nr ? W[(i0 + i) * wi + (j0 + r) * wj] : 0);
      double* c0 = C + j0 * ldc;
      int x = 0;
      if (ib == IB && nr == NR)
        for (; x + 2 * V <= width; x += 2 * V) {
          f64x2 c[NR][V], b[IB][V];
          for (int r = 0; r < NR; r++)
            for (int v = 0; v < V; v++) c[r][v] = load2(c0 + r * ldc + x + 2 * v);
          for (int i = 0; i < IB; i++)
            for (int v = 0; v < V; v++) b[i][v] = load2(b0 + i * ldb + x + 2 * v);
          for (int i = 0; i < IB; i++)
            for (int r = 0; r < NR; r++)
              for (int v = 0; v < V; v++) c[r][v] += w[i][r] * b[i][v];
          for (int r = 0; r < NR; r++)
            for (int v = 0; v < V; v++) memcpy(c0 + r * ldc + x + 2 * v, &c[r][v], sizeof(f64x2));
        }
      for (; x < width; x++)  // edges: the same sums, one entry at a time
        for (int r = 0; r < nr; r++) {
          double c = c0[r * ldc + x];
          for (int i = 0; i < ib; i++) c += w[i][r][0] * b0[i * ldb + x];
          c0[r * ldc + x] = c;
        }
    }
  }
}

// Tasks of the products: blocks of rows of A for row_dots, blocks of columns for combine_rows.
enum { TASK_ROWS = 8, TASK_COLUMNS = 128 };

template <class TB>
static inline void row_dots(const double* A, int m, const TB* B, int n, int D, double* C, int ldc, const HostTasks& tasks) {
  tasks.ranges(m, TASK_ROWS, [&](int i0, int i1) { row_dots(A + (size_t)i0 * D, i1 - i0, B, n, D, C + (size_t)i0 * ldc, ldc); });
}

// Rows j < n of C [n x D] += sum_i W[i * wi + j * wj] B_i over rows B_i [m x D] (combine_rows).
static inline void combine_rows(const double* W, size_t wi, size_t wj, const double* B, int m, int n, int D, double* C,
                                const HostTasks& tasks) {
  tasks.ranges(D, TASK_COLUMNS, [&](int x0, int x1) { combine_rows(W, wi, wj, B + x0, D, m, n, x1 - x0, C + x0, D); });
}

// ---- randomized subspace iteration ----

// The sizes the factorization takes (anything else is SKV_ERR_ARG), and its subspace width l.
static inline bool low_rank_args_ok(int S, int D, int rank, int oversample, int power_iters) {
  return S > 0 && D > 0 && rank > 0 && rank <= S && rank <= D && oversample >= 0 && power_iters >= 0;
}
static inline int subspace_width(int D, int rank, int oversample) { return (int)std::min<int64_t>((int64_t)rank + oversample, D); }

// Deterministic uniform(-1, 1) from splitmix64, so every runtime build draws the same Omega. The
// state only ever grows by SPLITMIX_STEP, so draw i is splitmix_uniform(state + (i + 1) * step):
// constexpr, so that the CUDA runtime draws Omega on the device from the same definition.
constexpr uint64_t SPLITMIX_STEP = 0x9E3779B97F4A7C15ull;
static constexpr double splitmix_uniform(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (double)(z >> 11) * 0x1.0p-52 - 1.0;
}
static inline double uniform(uint64_t& state) { return splitmix_uniform(state += SPLITMIX_STEP); }

// Rows per panel of the block Gram-Schmidt: a panel [8 x D] stays in L1/L2 while the rows before it
// stream; its own modified Gram-Schmidt (serial: ~l x 8 x D per pass) is what bounds the panel.
enum { ORTH_PANEL = 8 };

// Scratch (doubles) that orthonormalize and ritz need for l basis rows.
static inline uint64_t subspace_work(int l) { return std::max((uint64_t)l * ORTH_PANEL, eigen_work(l)); }

// P [nb x D] -= Q^T (Q P^T) for rows Q [m x D]: one classical Gram-Schmidt projection of a block,
// as two products. R: scratch [m x nb].
static inline void project_out(const double* Q, int m, double* P, int nb, int D, double* R, const HostTasks& tasks) {
  if (m == 0) return;
  row_dots(Q, m, P, nb, D, R, nb, tasks);
  for (size_t i = 0; i < (size_t)m * nb; i++) R[i] = -R[i];
  combine_rows(R, nb, 1, Q, m, nb, D, P, tasks);
}

// p -= (q_i . p) q_i for unit rows q_i of Q [m x D] in turn (modified Gram-Schmidt); returns |p|.
static inline double mgs(const double* Q, int m, double* p, int D) {
  for (int i = 0; i < m; i++) {
    const double* q = Q + (size_t)i * D;
    const double r = ddot(q, p, D);
    for (int k = 0; k < D; k++) p[k] -= r * q[k];
  }
  return sqrt(ddot(p, p, D));
}

static inline void scale_row(double* p, int D, double n) {
  for (int k = 0; k < D; k++) p[k] /= n;
}

// Row k of Q replaced by a random unit direction orthogonal to rows 0 .. k-1 (projected twice).
static inline void random_row(double* Q, int k, int D, double* R, uint64_t& rng, const HostTasks& tasks) {
  double* q = Q + (size_t)k * D;
  for (int attempt = 0; attempt < 8; attempt++) {
    for (int x = 0; x < D; x++) q[x] = uniform(rng);
    const double n0 = sqrt(ddot(q, q, D));
    project_out(Q, k, q, 1, D, R, tasks);
    project_out(Q, k, q, 1, D, R, tasks);
    const double n1 = sqrt(ddot(q, q, D));
    if (n1 > 1e-12 * n0 && std::isfinite(n1)) return scale_row(q, D, n1);
  }
}

// Q [l x D] (float64, one basis vector per row) = orthonormal basis of the rows of X [l x D], in
// order: row j of Q spans rows 0 .. j of X with the rows before it. Block Gram-Schmidt run twice
// (BCGS2, Barlow & Smoktunowicz 2013): a panel of ORTH_PANEL rows is projected off all earlier rows
// as two products, then orthonormalized within by modified Gram-Schmidt; then both again. A row
// that vanishes (S < l, or K = 0) is replaced by a random direction so Q stays orthonormal: below
// 1e-12 of its length after the first pass, or (Kahan-Parlett, "twice is enough") one that still
// loses half of itself after the second and again after a third. work: subspace_work(l) doubles.
static inline void orthonormalize(const float* X, int l, int D, double* Q, double* work, uint64_t& rng,
                                  const HostTasks& tasks = HostTasks()) {
  for (int p0 = 0; p0 < l; p0 += ORTH_PANEL) {
    const int nb = std::min((int)ORTH_PANEL, l - p0);
    double* P = Q + (size_t)p0 * D;  // [nb x D]
    for (size_t i = 0; i < (size_t)nb * D; i++) P[i] = X[(size_t)p0 * D + i];
    double n0[ORTH_PANEL];
    for (int k = 0; k < nb; k++) n0[k] = sqrt(ddot(P + (size_t)k * D, P + (size_t)k * D, D));
    // Pass 1: off the earlier panels, then within.
    project_out(Q, p0, P, nb, D, work, tasks);
    for (int k = 0; k < nb; k++) {
      double* q = P + (size_t)k * D;
      const double n1 = mgs(P, k, q, D);
      if (n1 > 1e-12 * n0[k] && std::isfinite(n1)) scale_row(q, D, n1);
      else random_row(Q, p0 + k, D, work, rng, tasks);
    }
    // Pass 2: the same again, now against rows that are orthonormal to working precision.
    project_out(Q, p0, P, nb, D, work, tasks);
    for (int k = 0; k < nb; k++) {
      double* q = P + (size_t)k * D;
      double n2 = mgs(P, k, q, D);
      if (!(n2 >= 0.5)) {  // the first pass left mostly rounding: project once more
        const double before = n2;
        project_out(Q, p0 + k, q, 1, D, work, tasks);
        n2 = sqrt(ddot(q, q, D));
        if (!(n2 >= 0.5 * before && n2 > 0 && std::isfinite(n2))) {
          random_row(Q, p0 + k, D, work, rng, tasks);
          continue;
        }
      }
      scale_row(q, D, n2);
    }
  }
}

// T [l x l] = Q X^T: T[a][b] = Q_a . X_b for basis rows Q [l x D] and X = Q G [l x D] (f32).
static inline void rayleigh_matrix(const double* Q, const float* X, int l, int D, double* T,
                                   const HostTasks& tasks = HostTasks()) {
  row_dots(Q, l, X, l, D, T, l, tasks);
}

// T [l x l] = (T + T^T) / 2: the Rayleigh matrix exactly symmetric, as the eigensolve assumes.
static inline void symmetrize(double* T, int l) {
  for (int a = 0; a < l; a++)
    for (int b = 0; b < a; b++) T[(size_t)a * l + b] = T[(size_t)b * l + a] = 0.5 * (T[(size_t)a * l + b] + T[(size_t)b * l + a]);
}

// ord [l] lists eigenpairs by w descending, ties to the lower index.
static inline void order_descending(const double* w, int l, int* ord) {
  for (int i = 0; i < l; i++) ord[i] = i;
  std::sort(ord, ord + l, [&](int a, int b) { return w[a] > w[b] || (w[a] == w[b] && a < b); });
}

// Rayleigh-Ritz, its small part: T [l x l] (destroyed) = W diag(w) W^T; ord lists eigenpairs by w
// descending (ties to the lower index), and rows i < m of T become the kept eigenvectors in that
// order (E [m x l], row stride l). Wt [l x l]: the eigenvectors as rows; work: subspace_work(l) doubles.
static inline void ritz_pairs(double* T, int l, int m, double* Wt, double* w, int* ord, double* work, const HostTasks& tasks) {
  symmetrize(T, l);
  symmetric_eigen(T, l, Wt, w, work, tasks);
  order_descending(w, l, ord);
  for (int i = 0; i < m; i++) std::copy(Wt + (size_t)ord[i] * l, Wt + (size_t)(ord[i] + 1) * l, T + (size_t)i * l);
}

// Each row of R [m x D] signed so that its largest entry (the first, on ties) is positive.
static inline void sign_rows(double* R, int m, int D) {
  for (int i = 0; i < m; i++) {
    double* r = R + (size_t)i * D;
    int big = 0;
    for (int k = 1; k < D; k++) big = fabs(r[k]) > fabs(r[big]) ? k : big;
    if (r[big] < 0)
      for (int k = 0; k < D; k++) r[k] = -r[k];
  }
}

// Rayleigh-Ritz: ritz_pairs, then rows i < m of R [m x D] = sum_a E[i][a] B[a] are the Ritz vectors
// of basis rows B [l x D], signed by sign_rows. Wt [l x l]; work: subspace_work(l) doubles.
static inline void ritz(double* T, int l, const double* B, int D, int m, double* Wt, double* w, int* ord, double* R,
                        double* work, const HostTasks& tasks = HostTasks()) {
  ritz_pairs(T, l, m, Wt, w, ord, work, tasks);
  memset(R, 0, sizeof(double) * m * D);
  combine_rows(T, 1, l, B, l, m, D, R, tasks);
  sign_rows(R, m, D);
}

// The power of two that brings max|K| into [0.5, 1): amax = m 2^e, m in [0.5, 1). Clamped so
// that 2^e and 2^-e are normal floats (keys beyond that range are scaled part of the way).
static inline int scale_exponent(float amax) {
  if (amax == 0.f) return 0;  // all-zero keys: nothing to scale, the factorization gives zeros
  int e;
  frexpf(amax, &e);
  return std::max(-125, std::min(125, e));
}
