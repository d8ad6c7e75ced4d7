// The host half of one Cholesky-QR pass of LowRankKeys (CholeskyQR2: Fukaya, Nakatsukasa, Yanagisawa
// and Yamamoto 2014). The device forms W = X X^T [l x l] of rows X [l x D] in float64; W = L L^T
// here, and the device solves L Q = X, so that Q has orthonormal rows, row j spanning rows 0 .. j of
// X: in exact arithmetic the Q of subspace.h's Gram-Schmidt. A pass squares X's condition number, so
// it is trusted only where that stays far from 1 / epsilon; otherwise LowRankKeys falls back to
// subspace.h's orthonormalize (which also replaces vanishing rows the way the wasm runtime does).
// Plain C++ (no CUDA): the native tests use it too.
#pragma once
#include <math.h>
#include <string.h>
#include <vector>
#include "../runtime/wasm/subspace.h"

// NOTE: a scaled pivot is the part of a row of X off the rows before it, relative to its length; below
// 1e-7 X's condition number nears 1 / sqrt(epsilon), where a pass cannot be repaired by the second.
// Keys whose singular values fall 3000-fold within l give ~1e7 (X = Q G squares them); near_identity
// is the guard that counts, this one refuses early what could not pass it.
constexpr double CHOLESKY_MIN_PIVOT = 1e-7;

// L [l x l] (lower triangular, positive diagonal, zeros above) with W = L L^T. W is scaled to a unit
// diagonal first (S W S = Ls Ls^T, S = diag(W)^{-1/2}: a Jacobi preconditioner, so that rows of very
// different lengths do not decide the pivots), then L = S^{-1} Ls. Returns false, L partly written,
// when a scaled pivot is below CHOLESKY_MIN_PIVOT or not finite.
// Column by column: Ls_ij = (Ws_ij - Ls_i[0:j] . Ls_j[0:j]) / Ls_jj, contiguous dots (Crout's entries,
// in another order), four rows' dots at a time in float64 pairs (subspace.h's dot_tile). One thread:
// at l = 176 a column is microseconds of work, and handing its rows to host threads cost more than
// it saved (6 passes: 1.6 ms on one thread of the H200 machine's Xeon, 3.8 ms on 8). NOTE: one dot
// a row (ddot) took 2.7 ms for the 6 passes (gram_bench, H200 machine): the dots are short (j
// terms) and each paid its own loop and reduction.
static inline bool cholesky_lower(const double* W, int l, double* L) {
  std::vector<double> s(l), dots(l);
  for (int i = 0; i < l; i++) {
    s[i] = 1.0 / sqrt(W[(size_t)i * l + i]);
    if (!std::isfinite(s[i])) return false;
  }
  for (int j = 0; j < l; j++) {
    double* Lj = L + (size_t)j * l;
    dot_tile<1, 1>(Lj, l, Lj, l, j, &dots[j], 1);
    const double p2 = W[(size_t)j * l + j] * s[j] * s[j] - dots[j];
    if (!(p2 >= CHOLESKY_MIN_PIVOT * CHOLESKY_MIN_PIVOT) || !std::isfinite(p2)) return false;
    const double pivot = sqrt(p2);
    Lj[j] = pivot;
    for (int k = j + 1; k < l; k++) Lj[k] = 0;
    int i = j + 1;
    for (; i + 4 <= l; i += 4) dot_tile<4, 1>(L + (size_t)i * l, l, Lj, l, j, &dots[i], 1);
    for (; i < l; i++) dot_tile<1, 1>(L + (size_t)i * l, l, Lj, l, j, &dots[i], 1);
    for (i = j + 1; i < l; i++) L[(size_t)i * l + j] = (W[(size_t)i * l + j] * s[i] * s[j] - dots[i]) / pivot;
  }
  for (int i = 0; i < l; i++)  // after every column: the recursion above needs Ls
    for (int j = 0; j <= i; j++) L[(size_t)i * l + j] /= s[i];
  return true;
}

// Whether every eigenvalue of the symmetric W [l x l] is within 0.5 of 1 (Gershgorin: each row's
// |W - I| sums below 0.5). For the second pass's W = Q1 Q1^T it bounds cond(Q1) by sqrt(3), which
// is what makes that pass orthonormal to working precision.
static inline bool near_identity(const double* W, int l) {
  for (int i = 0; i < l; i++) {
    double r = 0;
    for (int j = 0; j < l; j++) r += fabs(W[(size_t)i * l + j] - (i == j ? 1.0 : 0.0));
    if (!(r < 0.5)) return false;
  }
  return true;
}
