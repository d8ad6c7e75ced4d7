// Truncated factorization of pre-RoPE keys: K [S x D] ~ U SV, from the Gram matrix G = K^T K, the
// method of runtime/wasm/low_rank_keys.cc step for step: 0. K scaled by a power of two (max|K| in
// [0.5, 1)); 1. G on the device (the expensive part: S D^2 MACs; tensor cores, gram.cu);
// 2. randomized subspace iteration with the same splitmix64 Omega, X = Q G and its orthonormalization
// on the device in float64 (one pass of X X^T, an l x l Cholesky on the host, the triangular solve
// on the device, cholesky_qr.h; two passes, CholeskyQR2, for the basis Rayleigh-Ritz reads),
// falling back to the host's Gram-Schmidt (subspace.h, as wasm) for a pass too ill-conditioned to trust; 3. Rayleigh-Ritz, T = Q X^T and the
// Ritz vectors on the device, the small float64 eigensolve split: its reduction and QL iteration on
// the host, the eigenvectors (Householder Q and the rotations) on the device with the host's bits
// (eigenvectors.cuh); 4. sigma, SV, proj (per row scalars on the host, the rows signed and scaled
// on the device); 5. U = K proj on the device; 6. the scale undone. Only l x l matrices, the
// rotations and per row scalars cross between host and device, through pinned memory the caller
// lends (prefill may synchronize).
// NOTE: in exact arithmetic both orthonormalizations give the same Q; in float64 they differ by
// rounding (~1e-16 times the condition number of X), far below the f32 results' own.
#include <float.h>
#include <math.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>
#include "../runtime/wasm/subspace.h"
#include "cholesky_qr.h"
#include "common.cuh"
#include "eigenvectors.cuh"
#include "host_pool.h"
#include "products_f64.cuh"

namespace {

enum { REDUCE_THREADS = 256, ROTATION_BATCH = 2048 };  // ROTATION_BATCH: QL rotations sent to the device at a time

// flags[0] = bits of max |K| (non-negative floats order like their bits); flags[1] = 1 if a key is NaN or inf.
__global__ void __launch_bounds__(REDUCE_THREADS) AbsMaxKernel(const float* K, int64_t n, unsigned* flags) {
  float mx = 0.f;
  bool bad = false;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float a = fabsf(K[i]);
    if (!(a <= FLT_MAX)) bad = true;
    else mx = a > mx ? a : mx;
  }
  mx = warp_max(mx);
  if (__any_sync(0xffffffffu, bad) && threadIdx.x % 32 == 0) atomicOr(&flags[1], 1u);
  if (threadIdx.x % 32 == 0) atomicMax(&flags[0], __float_as_uint(mx));
}

__global__ void ScaleKernel(float* K, int64_t n, float f) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) K[i] *= f;
}

cudaError_t scale_keys(float* K, int64_t n, float f, cudaStream_t stream) {
  ScaleKernel<<<(int)std::min<int64_t>(skv_ceil_div(n, 256), 4096), 256, 0, stream>>>(K, n, f);
  return cudaGetLastError();
}

// SKV_LOW_RANK_TRACE=1 (benchmarks): host wall ms from the call's start at each mark, to stderr.
// The marks follow the call's synchronizations, so each interval holds its own device work.
struct Trace {
  const bool on = getenv("SKV_LOW_RANK_TRACE") && strcmp(getenv("SKV_LOW_RANK_TRACE"), "1") == 0;
  const std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  void mark(const char* what) const {
    if (on) fprintf(stderr, "lowRankKeys %8.3f ms %s\n", std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(), what);
  }
};

// Omega [n] f32 = uniform(rng) n times (subspace.h), entry i from the state after i + 1 steps, each
// on its own, with the host's bits.
__global__ void OmegaKernel(float* Q, size_t n, uint64_t state) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    Q[i] = (float)splitmix_uniform(state + (i + 1) * SPLITMIX_STEP);
}

// Step 4 of LowRankKeys on the device, block i for row i of V [rank x D] (the Ritz vectors, f64):
// the row signed as subspace.h's sign_rows signs it (its largest |entry|, the first on ties, made
// positive), then SV [rank x D] = (float)(sv[i] V_i) when SV is not null, and proj [D x rank]
// (transposed) = (float)(V_i pj[i]): the host's products, rounded once.
__global__ void __launch_bounds__(REDUCE_THREADS) ScaleRowsKernel(const double* V, int D, int rank, const double* sv,
                                                                  const double* pj, float* SV, float* proj) {
  __shared__ double best_s[REDUCE_THREADS / 32];
  __shared__ int at_s[REDUCE_THREADS / 32];
  const int i = blockIdx.x;
  const double* r = V + (size_t)i * D;
  double best = -1;
  int at = D;
  for (int k = threadIdx.x; k < D; k += blockDim.x)
    if (fabs(r[k]) > best) best = fabs(r[k]), at = k;  // ascending k: the first of equals stays
  for (int o = 16; o > 0; o /= 2) {
    const double b2 = __shfl_down_sync(0xffffffffu, best, o);
    const int a2 = __shfl_down_sync(0xffffffffu, at, o);
    if (b2 > best || (b2 == best && a2 < at)) best = b2, at = a2;
  }
  if (threadIdx.x % 32 == 0) best_s[threadIdx.x / 32] = best, at_s[threadIdx.x / 32] = at;
  __syncthreads();
  best = best_s[0], at = at_s[0];
  for (int w = 1; w < REDUCE_THREADS / 32; w++)
    if (best_s[w] > best || (best_s[w] == best && at_s[w] < at)) best = best_s[w], at = at_s[w];
  const bool flip = at < D && r[at] < 0;
  for (int k = threadIdx.x; k < D; k += blockDim.x) {
    const double v = flip ? -r[k] : r[k];
    if (SV) SV[(size_t)i * D + k] = (float)__dmul_rn(sv[i], v);
    proj[(size_t)k * rank + i] = (float)__dmul_rn(v, pj[i]);
  }
}

cudaError_t scale_rows(const double* V, int D, int rank, const double* sv, const double* pj, float* SV, float* proj, cudaStream_t stream) {
  ScaleRowsKernel<<<rank, REDUCE_THREADS, 0, stream>>>(V, D, rank, sv, pj, SV, proj);
  return cudaGetLastError();
}

// QL rotations sent to the device at a time, for an l x l eigensolve: l^2 / 2 holds a sweep's l - 1.
int rotation_batch(int l) { return std::max(1, std::min((int)ROTATION_BATCH, l * l / 2)); }

// The call's device buffers (in the caller's workspace) and pinned host ones (the caller's pinned
// block). The rotation logs hold a batch of QL rotations (i, c, s) on the device, and two in the
// pinned block (ritz_pairs_on_device).
struct Layout {
  size_t flags, G, Qf, X, Q, Q1, W, M, Vt, log, ord, scale, gram, device;  // device block
  size_t fl, Wh, Lh, logh, ordh, sigma, scaleh, pinned;                   // pinned block
  Layout(int S, int D, int rank, int l) {
    const size_t DD = (size_t)D * D, lD = (size_t)l * D, ll = (size_t)l * l, batch = (size_t)rotation_batch(l);
    size_t at = 0;
    flags = skv_carve(at, 16), G = skv_carve(at, sizeof(float) * DD), Qf = skv_carve(at, sizeof(float) * lD), X = skv_carve(at, sizeof(float) * lD);
    Q = skv_carve(at, sizeof(double) * lD), Q1 = skv_carve(at, sizeof(double) * lD), W = skv_carve(at, sizeof(double) * ll);
    M = skv_carve(at, sizeof(double) * ll), Vt = skv_carve(at, sizeof(double) * ll), log = skv_carve(at, sizeof(double) * 3 * batch);
    ord = skv_carve(at, sizeof(int) * l), scale = skv_carve(at, sizeof(double) * 3 * rank), gram = skv_carve(at, GramWorkspace(S, D)), device = at;
    at = 0;
    fl = skv_carve(at, 16), Wh = skv_carve(at, sizeof(double) * ll), Lh = skv_carve(at, sizeof(double) * ll), logh = skv_carve(at, sizeof(double) * 6 * batch);
    ordh = skv_carve(at, sizeof(int) * l), sigma = skv_carve(at, sizeof(float) * rank), scaleh = skv_carve(at, sizeof(double) * 3 * rank), pinned = at;
  }
};

// The subspace iteration's device buffers and pinned mirrors of the l x l matrices.
struct Subspace {
  int l, D;
  float* Qf;   // [l x D] the basis in f32, the left operand of X = Q G
  float* X;    // [l x D] Q G
  double* Q;   // [l x D] the basis in f64
  double* Q1;  // [l x D] the first Cholesky-QR pass; the Ritz vectors at the end
  double* W;   // [l x l] a pass's Gram matrix; the Rayleigh matrix
  double* M;   // [l x l] a pass's Cholesky factor; the kept eigenvectors
  double* Vt;  // [l x l] the Rayleigh matrix's eigenvectors
  double* log; // [3 x rotation_batch] a batch of QL rotations (i, c, s); logh: two of them
  int* ord;    // [l] the eigenpairs' order
  double *Wh, *Lh, *logh;  // pinned
  int* ordh;               // pinned
  const Trace& trace;
};

// One Cholesky-QR pass: W = A A^T on the device, W = L L^T on the host, L B = A solved on the device
// (and Bf, if not null). *ok is false, B unwritten, when the pass is not to be trusted (cholesky_qr.h);
// `second` also asks that W be near the identity, what makes the pass orthonormal to working precision.
// NOTE: a one-block Cholesky on the device (warp dots, two barriers a column) took 0.57 ms at l = 176
// on the H200, above this round trip with the host's (~0.5 ms): the host keeps it.
template <class TA>
cudaError_t cholesky_qr_pass(Subspace& s, const TA* A, double* B, float* Bf, bool second, bool* ok, cudaStream_t stream) {
  const int l = s.l, D = s.D;
  const size_t ll = sizeof(double) * l * l;
  SKV_CUDA_CALL(products_f64::RowDots(l, l, D, A, A, s.W, stream));
  SKV_CUDA_CALL(CopyWords(s.Wh, s.W, ll, stream));
  SKV_CUDA_CALL(cudaStreamSynchronize(stream));
  s.trace.mark("W read");
  *ok = (!second || near_identity(s.Wh, l)) && cholesky_lower(s.Wh, l, s.Lh);
  s.trace.mark("cholesky");
  if (!*ok) return cudaSuccess;
  SKV_CUDA_CALL(CopyWords(s.M, s.Lh, ll, stream));
  return products_f64::LowerSolve(l, D, s.M, A, B, Bf, stream);
}

// Q and Qf = an orthonormal basis of the rows of X, in order (subspace.h's orthonormalize): Cholesky-QR
// on the device, else (a pass refused) Gram-Schmidt on the host, whose result is copied up. The
// `last` basis (the one Rayleigh-Ritz reads) takes two passes, CholeskyQR2; the others, which only the
// next product X = Q G reads, one: its rows span those of X and are orthonormal to ~1e-16 cond(X)^2
// (~1e-5 for a 128K layer's keys), conditioned enough for that product, and the span is all that
// subspace iteration carries from one round to the next.
// NOTE: two passes each round were 6 host round trips of ~0.45 ms a 128K row (bench/NOTES.md v33).
cudaError_t orthonormalize_rows(Subspace& s, uint64_t& rng, bool last, cudaStream_t stream) {
  const size_t lD = (size_t)s.l * s.D;
  bool ok;
  SKV_CUDA_CALL(cholesky_qr_pass(s, s.X, last ? s.Q1 : s.Q, last ? nullptr : s.Qf, false, &ok, stream));
  if (ok && last) SKV_CUDA_CALL(cholesky_qr_pass(s, s.Q1, s.Q, s.Qf, true, &ok, stream));
  if (ok) return cudaSuccess;
  std::vector<float> Xh(lD), Qfh(lD);
  std::vector<double> Qh(lD), work(subspace_work(s.l));
  SKV_CUDA_CALL(cudaMemcpyAsync(Xh.data(), s.X, sizeof(float) * lD, cudaMemcpyDeviceToHost, stream));
  SKV_CUDA_CALL(cudaStreamSynchronize(stream));
  // Host threads when the products are large enough to pay for them (176 x 176 x 1024 is 32 M
  // multiply-adds); the bits do not depend on it.
  HostPool pool((uint64_t)s.l * s.l * s.D >= (1u << 22) ? HostPool::default_threads() : 1);
  orthonormalize(Xh.data(), s.l, s.D, Qh.data(), work.data(), rng, pool.tasks());
  for (size_t i = 0; i < lD; i++) Qfh[i] = (float)Qh[i];
  SKV_CUDA_CALL(cudaMemcpyAsync(s.Q, Qh.data(), sizeof(double) * lD, cudaMemcpyHostToDevice, stream));
  SKV_CUDA_CALL(cudaMemcpyAsync(s.Qf, Qfh.data(), sizeof(float) * lD, cudaMemcpyHostToDevice, stream));
  return cudaStreamSynchronize(stream);  // NOTE: the host vectors die here
}

// subspace.h's ritz_pairs with its O(n^3) half on the device (eigenvectors.cuh), the same bits:
// T [l x l] in s.Wh on entry; the eigenvalues in w, their order in ord, and the kept eigenvectors
// E [rank x l] in s.M. work: 2 l doubles.
cudaError_t ritz_pairs_on_device(Subspace& s, int rank, double* w, int* ord, double* work, cudaStream_t stream) {
  const int l = s.l;
  symmetrize(s.Wh, l);
  tridiagonalize(s.Wh, l, w, work, work + l);
  SKV_CUDA_CALL(CopyWords(s.W, s.Wh, sizeof(double) * l * l, stream));
  SKV_CUDA_CALL(eigenvectors::householder_q(s.W, l, s.Vt, stream));
  // The rotations go up in batches while the iteration goes on: each batch is copied into one of
  // two pinned halves (the other may still be read by the copy before it), then up, and applied.
  // NOTE: with one batch at the end (l^2 rotations) the device's 1.72 ms of rotations followed the
  // host's 1.0 ms of iteration (gram_bench, H200 machine).
  const int batch = rotation_batch(l);
  std::vector<double> rotations(3 * (size_t)batch);
  cudaEvent_t read[2] = {nullptr, nullptr};
  int half = 0;
  cudaError_t err = cudaSuccess;
  tridiagonal_ql(w, work, l, rotations.data(), batch, [&](const double* lg, int count) {
    if (err != cudaSuccess || count == 0) return;
    double* pinned = s.logh + (size_t)half * 3 * batch;
    err = read[half] ? cudaEventSynchronize(read[half]) : cudaEventCreateWithFlags(&read[half], cudaEventDisableTiming);
    if (err == cudaSuccess) {
      memcpy(pinned, lg, sizeof(double) * 3 * count);
      err = CopyWords(s.log, pinned, sizeof(double) * 3 * count, stream);
    }
    if (err == cudaSuccess) err = cudaEventRecord(read[half], stream);
    if (err == cudaSuccess) err = eigenvectors::rotate_rows(s.Vt, l, s.log, count, stream);
    half ^= 1;
  });
  for (cudaEvent_t e : read)
    if (e) cudaEventDestroy(e);  // released once its copy has run
  SKV_CUDA_CALL(err);
  order_descending(w, l, ord);
  memcpy(s.ordh, ord, sizeof(int) * l);
  SKV_CUDA_CALL(CopyWords(s.ord, s.ordh, sizeof(int) * l, stream));
  return eigenvectors::gather_rows(s.Vt, l, s.ord, rank, s.M, stream);
}

// subspace.h's ritz_pairs on the host, for a width whose eigenvectors the device's kernels cannot
// hold in a block's shared memory (eigenvectors::fits): the same bits, slower (O(l^3) on the
// host's threads). T [l x l] in s.Wh on entry; as ritz_pairs_on_device, E [rank x l] in s.M.
cudaError_t ritz_pairs_on_host(Subspace& s, int rank, double* w, int* ord, cudaStream_t stream) {
  const int l = s.l;
  std::vector<double> Wt((size_t)l * l), work(subspace_work(l));
  HostPool pool(HostPool::default_threads());
  ritz_pairs(s.Wh, l, rank, Wt.data(), w, ord, work.data(), pool.tasks());
  return CopyWords(s.M, s.Wh, sizeof(double) * rank * l, stream);  // E: rows i < rank of s.Wh, read from pinned memory
}

}  // namespace

size_t LowRankKeysWorkspace(int S, int D, int rank, int oversample, int power_iters) {
  return low_rank_args_ok(S, D, rank, oversample, power_iters) ? Layout(S, D, rank, subspace_width(D, rank, oversample)).device : 0;
}

size_t LowRankKeysPinned(int S, int D, int rank, int oversample, int power_iters) {
  return low_rank_args_ok(S, D, rank, oversample, power_iters) ? Layout(1, D, rank, subspace_width(D, rank, oversample)).pinned : 0;
}

cudaError_t LowRankKeys(float* K, int S, int D, int rank, int oversample, int power_iters, uint32_t seed, float* U,
                        float* SV, float* proj, float* sigma, SkvWorkspace ws, SkvWorkspace pinned, int* status,
                        cudaStream_t stream) {
  *status = SKV_LOW_RANK_ARG;
  if (!low_rank_args_ok(S, D, rank, oversample, power_iters)) return cudaSuccess;
  const int l = subspace_width(D, rank, oversample);
  const size_t lD = (size_t)l * D, ll = (size_t)l * l;
  const int64_t SD = (int64_t)S * D;
  const Layout at(S, D, rank, l);
  if (ws.bytes < at.device || pinned.bytes < at.pinned) return cudaErrorInvalidValue;
  const Trace trace;
  char* base = static_cast<char*>(ws.ptr);
  char* host = static_cast<char*>(pinned.ptr);
  unsigned* flags = reinterpret_cast<unsigned*>(base + at.flags);
  float* G = reinterpret_cast<float*>(base + at.G);
  Subspace sub{l, D, reinterpret_cast<float*>(base + at.Qf), reinterpret_cast<float*>(base + at.X), reinterpret_cast<double*>(base + at.Q),
               reinterpret_cast<double*>(base + at.Q1), reinterpret_cast<double*>(base + at.W), reinterpret_cast<double*>(base + at.M),
               reinterpret_cast<double*>(base + at.Vt), reinterpret_cast<double*>(base + at.log), reinterpret_cast<int*>(base + at.ord),
               reinterpret_cast<double*>(host + at.Wh), reinterpret_cast<double*>(host + at.Lh), reinterpret_cast<double*>(host + at.logh),
               reinterpret_cast<int*>(host + at.ordh), trace};
  unsigned* fl = reinterpret_cast<unsigned*>(host + at.fl);
  float* sigma_h = reinterpret_cast<float*>(host + at.sigma);
  double* scale_h = reinterpret_cast<double*>(host + at.scaleh);
  double* scale = reinterpret_cast<double*>(base + at.scale);
  // Host: the small eigenproblem's values and scratch.
  std::vector<double> w(l), work(2 * (size_t)l);
  std::vector<int> ord(l);
  trace.mark("alloc");

  // 0. max|K| (and a NaN / inf check), then K / 2^e so that G can neither overflow nor underflow.
  SKV_CUDA_CALL(cudaMemsetAsync(flags, 0, 2 * sizeof(unsigned), stream));
  AbsMaxKernel<<<(int)std::min<int64_t>(skv_ceil_div(SD, REDUCE_THREADS), 1024), REDUCE_THREADS, 0, stream>>>(K, SD, flags);
  SKV_LAUNCH_CHECK();
  SKV_CUDA_CALL(CopyWords(fl, flags, 2 * sizeof(unsigned), stream));
  SKV_CUDA_CALL(cudaStreamSynchronize(stream));
  trace.mark("absmax read");
  if (fl[1]) return cudaSuccess;  // SKV_LOW_RANK_ARG: nothing written
  float amax;
  memcpy(&amax, &fl[0], 4);
  const int e = scale_exponent(amax);
  if (e) SKV_CUDA_CALL(scale_keys(K, SD, ldexpf(1.f, -e), stream));
  // 1. Gram matrix G = K^T K.
  SKV_CUDA_CALL(Gram(K, S, D, D, G, SkvWorkspace{base + at.gram, GramWorkspace(S, D)}, stream));
  // 2. X = Omega G, then power_iters rounds of X = Q G (G is symmetric, so X^T = G Q^T), each
  //    orthonormalized.
  uint64_t rng = 0x5D1A0C3Bull ^ ((uint64_t)seed << 32 | seed);
  OmegaKernel<<<(int)std::min<size_t>(skv_ceil_div(lD, 256), 1024), 256, 0, stream>>>(sub.Qf, lD, rng);
  SKV_LAUNCH_CHECK();
  rng += lD * SPLITMIX_STEP;  // the state after Omega's draws, as the host's loop leaves it
  for (int it = 0; it <= power_iters; it++) {
    SKV_CUDA_CALL(Gemm(l, D, D, 1.f, sub.Qf, SKV_F32, D, 0, nullptr, G, SKV_F32, D, 0, 0.f, sub.X, D, stream));
    SKV_CUDA_CALL(orthonormalize_rows(sub, rng, it == power_iters, stream));
  }
  // 3. Rayleigh-Ritz: T = Q X^T = Q G Q^T, eigenpairs descending, V_r = eigvecs[:, :rank]^T Q, signed.
  SKV_CUDA_CALL(Gemm(l, D, D, 1.f, sub.Qf, SKV_F32, D, 0, nullptr, G, SKV_F32, D, 0, 0.f, sub.X, D, stream));
  SKV_CUDA_CALL(products_f64::RowDots(l, l, D, sub.Q, sub.X, sub.W, stream));
  SKV_CUDA_CALL(CopyWords(sub.Wh, sub.W, sizeof(double) * ll, stream));
  SKV_CUDA_CALL(cudaStreamSynchronize(stream));
  trace.mark("T read");
  if (eigenvectors::fits(l)) SKV_CUDA_CALL(ritz_pairs_on_device(sub, rank, w.data(), ord.data(), work.data(), stream));
  else SKV_CUDA_CALL(ritz_pairs_on_host(sub, rank, w.data(), ord.data(), stream));
  trace.mark("eigensolve");
  SKV_CUDA_CALL(products_f64::CombineRows(rank, D, l, sub.M, sub.Q, sub.Q1, (float*)nullptr, stream));
  // 4. sigma and SV (times 2^e: the keys' scale); proj still for the scaled keys, for step 5; and
  //    (6.) proj for the caller's keys (/ 2^e, rounded once from float64). Per row scalars here,
  //    the rows' products on the device (ScaleRowsKernel) from the unsigned Ritz vectors in Q1.
  const double up = ldexp(1.0, e), down = ldexp(1.0, -e);
  const double s1 = sqrt(std::max(w[ord[0]], 0.0));
  for (int i = 0; i < rank; i++) {
    const double si = sqrt(std::max(w[ord[i]], 0.0));
    const bool kept = si > 1e-6 * s1;  // NOTE: directions at noise level are dropped
    sigma_h[i] = (float)(si * up);
    scale_h[i] = si * up;
    scale_h[rank + i] = kept ? 1.0 / si : 0.0;
    scale_h[2 * rank + i] = kept ? down / si : 0.0;
  }
  SKV_CUDA_CALL(CopyWords(sigma, sigma_h, sizeof(float) * rank, stream));
  SKV_CUDA_CALL(CopyWords(scale, scale_h, sizeof(double) * 3 * rank, stream));
  SKV_CUDA_CALL(scale_rows(sub.Q1, D, rank, scale, scale + rank, SV, proj, stream));
  // 5. U = K proj [S x rank]; the scales cancel: (K / 2^e) (proj 2^e). Large: tensor cores (gemm.cu).
  SKV_CUDA_CALL(Gemm(S, rank, D, 1.f, K, SKV_F32, D, 0, nullptr, proj, SKV_F32, rank, 0, 0.f, U, rank, stream));
  // 6. proj for the caller's keys, and K restored.
  if (e) {
    SKV_CUDA_CALL(scale_rows(sub.Q1, D, rank, nullptr, scale + 2 * rank, nullptr, proj, stream));
    SKV_CUDA_CALL(scale_keys(K, SD, ldexpf(1.f, e), stream));
  }
  // NOTE: the pinned block is the caller's again once the kernels that read it have run.
  SKV_CUDA_CALL(cudaStreamSynchronize(stream));
  trace.mark("U and end");
  *status = SKV_LOW_RANK_OK;
  return cudaSuccess;
}
