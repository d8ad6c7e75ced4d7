// Truncated factorization of pre-RoPE keys: K [S x D] ~ U SV, from the Gram matrix G = K^T K.
// Steps: 0. K scaled by a power of two (max|K| in [0.5, 1)); 1. G (the expensive part: S D^2 / 2
// MACs); 2. randomized subspace iteration on G; 3. Rayleigh-Ritz with a float64 eigensolve;
// 4. sigma, SV, proj; 5. U = K proj; 6. the scale undone (proj, K).
// NOTE: an f32 Gram resolves directions down to ~sqrt(eps_f32) sigma_1 ~ 3e-4 sigma_1; below
// that (rank past the signal, fitting noise) the basis is close to, not equal to, the exact SVD's.
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <algorithm>
#include "abi.h"
#include "subspace.h"
#include "scratch.h"

namespace {

// G [D x D] = K^T K: only the upper block triangle goes through the GEMM (one call per block
// row, from the diagonal block rightwards), then it is mirrored.
void gram(const float* K, int S, int D, float* G) {
  const int bs = 128;
  for (int i0 = 0; i0 < D; i0 += bs)
    skv_gemm(std::min(bs, D - i0), D - i0, S, 1.f, K + i0, SKV_F32, D, 1, nullptr,
             K + i0, SKV_F32, D, 0, 0.f, G + (size_t)i0 * D + i0, D);
  for (int i = 0; i < D; i++)
    for (int j = 0; j < i; j++) G[(size_t)i * D + j] = G[(size_t)j * D + i];
}

void scale_keys(float* K, size_t n, float f) {
  for (size_t i = 0; i < n; i++) K[i] *= f;
}

}  // namespace

SKV_EXPORT int skv_low_rank_keys(float* K, int S, int D, int rank, int oversample,
                                 int power_iters, uint32_t seed,
                                 float* U, float* SV, float* proj, float* sigma) {
  if (!low_rank_args_ok(S, D, rank, oversample, power_iters)) return SKV_ERR_ARG;
  const int l = subspace_width(D, rank, oversample);
  // One (counted) allocation: G, Qf, X (f32), then Q, V, T, Wt, w, work (f64) and the eigenvalue order.
  // NOTE: sized in 64 bits: in wasm32, D = 32768 makes G exactly 4 GiB, which wraps size_t to 0.
  const uint64_t DD = (uint64_t)D * D, lD = (uint64_t)l * D, ll = (uint64_t)l * l;
  const uint64_t f32s = DD + 2 * lD, f64s = lD + (uint64_t)rank * D + 2 * ll + l + subspace_work(l);
  const uint64_t bytes = f32s * 4 + 8 + f64s * 8 + (uint64_t)l * 4;
  if (bytes > SKV_MAX_BLOCK) return SKV_ERR_ALLOC;
  // The largest |key|; inputs are validated upstream, but a NaN or inf here would poison everything.
  const size_t SD = (size_t)S * D;  // fits: K is in the heap
  float amax = 0.f;
  for (size_t i = 0; i < SD; i++) {
    float a = fabsf(K[i]);
    if (!(a <= FLT_MAX)) return SKV_ERR_ARG;
    amax = a > amax ? a : amax;
  }
  char* mem = (char*)skv_counted_alloc(bytes);
  if (!mem) return SKV_ERR_ALLOC;
  float* G = (float*)mem;     // [D x D]
  float* Qf = G + DD;         // [l x D] Q in f32, for the GEMM
  float* X = Qf + lD;         // [l x D] = (G Q)^T
  double* Q = (double*)(mem + ((f32s * 4 + 7) & ~(uint64_t)7));  // [l x D] orthonormal rows
  double* V = Q + lD;         // [rank x D] Ritz vectors = V_r^T
  double* T = V + (size_t)rank * D;  // [l x l] Q^T G Q
  double* Wt = T + ll;        // [l x l] its eigenvectors as rows
  double* w = Wt + ll;        // [l] its eigenvalues
  double* work = w + l;       // [subspace_work(l)]
  int* ord = (int*)(work + subspace_work(l));  // [l] eigenvalues, descending

  // 0. K / 2^e, max|K| in [0.5, 1): keys of 1e30 would overflow G (and of 1e-30 underflow it).
  //    Powers of two scale exactly, so every step below gives the unscaled result times 2^-e.
  const int e = scale_exponent(amax);
  if (e) scale_keys(K, SD, ldexpf(1.f, -e));
  // 1. Gram matrix.
  gram(K, S, D, G);
  // 2. X = G Omega, then power_iters rounds of X = G Q; G is symmetric, so X^T = Q^T G.
  uint64_t rng = 0x5D1A0C3Bull ^ ((uint64_t)seed << 32 | seed);
  for (size_t i = 0; i < lD; i++) Qf[i] = (float)uniform(rng);
  for (int it = 0; it <= power_iters; it++) {
    skv_gemm(l, D, D, 1.f, Qf, SKV_F32, D, 0, nullptr, G, SKV_F32, D, 0, 0.f, X, D);
    orthonormalize(X, l, D, Q, work, rng);
    for (size_t i = 0; i < lD; i++) Qf[i] = (float)Q[i];
  }
  // 3. Rayleigh-Ritz: T = Q^T G Q, eigenpairs descending, V_r = Q eigvecs[:, :rank].
  skv_gemm(l, D, D, 1.f, Qf, SKV_F32, D, 0, nullptr, G, SKV_F32, D, 0, 0.f, X, D);
  rayleigh_matrix(Q, X, l, D, T);
  ritz(T, l, Q, D, rank, Wt, w, ord, V, work);
  // 4. sigma, SV = diag(sigma) V_r^T (both times 2^e: the keys' scale), and proj = V_r diag(1/sigma)
  //    still for the scaled keys, which step 5 needs.
  const double up = ldexp(1.0, e);
  double s1 = sqrt(std::max(w[ord[0]], 0.0));
  for (int i = 0; i < rank; i++) {
    double si = sqrt(std::max(w[ord[i]], 0.0));
    double inv = si > 1e-6 * s1 ? 1.0 / si : 0.0;  // NOTE: directions at noise level are dropped
    sigma[i] = (float)(si * up);
    for (int k = 0; k < D; k++) {
      SV[(size_t)i * D + k] = (float)(si * up * V[(size_t)i * D + k]);
      proj[(size_t)k * rank + i] = (float)(V[(size_t)i * D + k] * inv);
    }
  }
  // 5. U = K proj [S x rank], the same product that compaction uses for later tokens. The scales
  //    cancel: (K / 2^e) (proj 2^e).
  skv_gemm(S, rank, D, 1.f, K, SKV_F32, D, 0, nullptr, proj, SKV_F32, rank, 0, 0.f, U, rank);
  // 6. proj for the caller's keys (/ 2^e, in float64 so that it rounds once), and K restored.
  if (e) {
    const double down = ldexp(1.0, -e);
    for (int i = 0; i < rank; i++) {
      double si = sqrt(std::max(w[ord[i]], 0.0));
      double inv = si > 1e-6 * s1 ? down / si : 0.0;
      for (int k = 0; k < D; k++) proj[(size_t)k * rank + i] = (float)(V[(size_t)i * D + k] * inv);
    }
    scale_keys(K, SD, ldexpf(1.f, e));
  }
  free(mem);
  return SKV_OK;
}
