// Truncated factorization of pre-RoPE keys: K [S x D] ~ U SV, from the Gram matrix G = K^T K, the
// method of runtime/wasm/low_rank_keys.cc step for step: 0. K scaled by a power of two (max|K| in
// [0.5, 1)); 1. G on the device (the expensive part: S D^2 MACs; tensor cores, gram.cu);
// 2. randomized subspace iteration with the same splitmix64 Omega, X = Q G and its orthonormalization
// on the device in float64 (CholeskyQR2: two passes of X X^T, an l x l Cholesky on the host, the
// triangular solve on the device; cholesky_qr.h), falling back to the host's Gram-Schmidt
// (subspace.h, as wasm) for a pass too ill-conditioned to trust; 3. Rayleigh-Ritz, T = Q X^T and the
// Ritz vectors on the device, the small float64 eigensolve on the host (subspace.h); 4. sigma, SV,
// proj; 5. U = K proj on the device; 6. the scale undone. Only l x l matrices (and the rank x D
// Ritz vectors) cross to the host (prefill may synchronize).
// NOTE: in exact arithmetic both orthonormalizations give the same Q; in float64 they differ by
// rounding (~1e-16 times the condition number of X), far below the f32 results' own.
#include <float.h>
#include <math.h>
#include <string.h>
#include <algorithm>
#include <cmath>
#include <vector>
#include "../runtime/wasm/subspace.h"
#include "cholesky_qr.h"
#include "common.cuh"
#include "host_pool.h"
#include "products_f64.cuh"

namespace {

enum { REDUCE_THREADS = 256 };

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

// Device temporaries of one call, freed on every exit path.
struct DeviceBlock {
  void* p = nullptr;
  ~DeviceBlock() { if (p) cudaFree(p); }
};

// Bytes from `at` rounded up to 256: each buffer of the block starts aligned.
size_t carve(size_t& at, size_t bytes) {
  const size_t start = at;
  at = (at + bytes + 255) / 256 * 256;
  return start;
}

// The subspace iteration's device buffers and host mirrors of the l x l matrices.
struct Subspace {
  int l, D;
  float* Qf;   // [l x D] the basis in f32, the left operand of X = Q G
  float* X;    // [l x D] Q G
  double* Q;   // [l x D] the basis in f64
  double* Q1;  // [l x D] the first Cholesky-QR pass; the Ritz vectors at the end
  double* W;   // [l x l] a pass's Gram matrix; the Rayleigh matrix
  double* M;   // [l x l] a pass's Cholesky factor; the kept eigenvectors
  std::vector<double> Wh, Lh;
};

// One Cholesky-QR pass: W = A A^T on the device, W = L L^T on the host, L B = A solved on the device
// (and Bf, if not null). *ok is false, B unwritten, when the pass is not to be trusted (cholesky_qr.h);
// `second` also asks that W be near the identity, what makes the pass orthonormal to working precision.
template <class TA>
cudaError_t cholesky_qr_pass(Subspace& s, const TA* A, double* B, float* Bf, bool second, bool* ok, const HostTasks& tasks,
                             cudaStream_t stream) {
  const int l = s.l, D = s.D;
  SKV_CUDA_CALL(products_f64::RowDots(l, l, D, A, A, s.W, stream));
  SKV_CUDA_CALL(cudaMemcpyAsync(s.Wh.data(), s.W, sizeof(double) * l * l, cudaMemcpyDeviceToHost, stream));
  SKV_CUDA_CALL(cudaStreamSynchronize(stream));
  *ok = (!second || near_identity(s.Wh.data(), l)) && cholesky_lower(s.Wh.data(), l, s.Lh.data(), tasks);
  if (!*ok) return cudaSuccess;
  SKV_CUDA_CALL(cudaMemcpyAsync(s.M, s.Lh.data(), sizeof(double) * l * l, cudaMemcpyHostToDevice, stream));
  return products_f64::LowerSolve(l, D, s.M, A, B, Bf, stream);
}

// Q and Qf = an orthonormal basis of the rows of X, in order (subspace.h's orthonormalize): CholeskyQR2
// on the device, else (a pass refused) Gram-Schmidt on the host, whose result is copied up.
cudaError_t orthonormalize_rows(Subspace& s, std::vector<double>& Qh, std::vector<float>& Xh, std::vector<float>& Qfh,
                                std::vector<double>& work, uint64_t& rng, const HostTasks& tasks, cudaStream_t stream) {
  const size_t lD = (size_t)s.l * s.D;
  bool ok;
  SKV_CUDA_CALL(cholesky_qr_pass(s, s.X, s.Q1, (float*)nullptr, false, &ok, tasks, stream));
  if (ok) SKV_CUDA_CALL(cholesky_qr_pass(s, s.Q1, s.Q, s.Qf, true, &ok, tasks, stream));
  if (ok) return cudaSuccess;
  SKV_CUDA_CALL(cudaMemcpyAsync(Xh.data(), s.X, sizeof(float) * lD, cudaMemcpyDeviceToHost, stream));
  SKV_CUDA_CALL(cudaStreamSynchronize(stream));
  orthonormalize(Xh.data(), s.l, s.D, Qh.data(), work.data(), rng, tasks);
  for (size_t i = 0; i < lD; i++) Qfh[i] = (float)Qh[i];
  SKV_CUDA_CALL(cudaMemcpyAsync(s.Q, Qh.data(), sizeof(double) * lD, cudaMemcpyHostToDevice, stream));
  return cudaMemcpyAsync(s.Qf, Qfh.data(), sizeof(float) * lD, cudaMemcpyHostToDevice, stream);
}

}  // namespace

cudaError_t LowRankKeys(float* K, int S, int D, int rank, int oversample, int power_iters, uint32_t seed, float* U,
                        float* SV, float* proj, float* sigma, int* status, cudaStream_t stream) {
  *status = SKV_LOW_RANK_ARG;
  if (S <= 0 || D <= 0 || rank <= 0 || rank > S || rank > D || oversample < 0 || power_iters < 0) return cudaSuccess;
  const int l = (int)std::min<int64_t>((int64_t)rank + oversample, D);  // subspace width
  const size_t DD = (size_t)D * D, lD = (size_t)l * D, ll = (size_t)l * l;
  const int64_t SD = (int64_t)S * D;
  // Device: flags (2 words), G [D x D], the subspace's buffers, the Gram's workspace.
  size_t at = 0;
  const size_t flags_at = carve(at, 16), G_at = carve(at, sizeof(float) * DD), Qf_at = carve(at, sizeof(float) * lD),
               X_at = carve(at, sizeof(float) * lD), Q_at = carve(at, sizeof(double) * lD), Q1_at = carve(at, sizeof(double) * lD),
               W_at = carve(at, sizeof(double) * ll), M_at = carve(at, sizeof(double) * ll);
  const size_t gram_bytes = GramWorkspace(S, D), gram_at = carve(at, gram_bytes);
  DeviceBlock block;
  if (cudaMalloc(&block.p, at) != cudaSuccess) {
    cudaGetLastError();  // clear the allocation failure; it is reported as a status
    *status = SKV_LOW_RANK_ALLOC;
    return cudaSuccess;
  }
  char* base = static_cast<char*>(block.p);
  unsigned* flags = reinterpret_cast<unsigned*>(base + flags_at);
  float* G = reinterpret_cast<float*>(base + G_at);
  Subspace sub{l, D, reinterpret_cast<float*>(base + Qf_at), reinterpret_cast<float*>(base + X_at), reinterpret_cast<double*>(base + Q_at),
               reinterpret_cast<double*>(base + Q1_at), reinterpret_cast<double*>(base + W_at), reinterpret_cast<double*>(base + M_at),
               std::vector<double>(ll), std::vector<double>(ll)};
  // Host: the float64 basis and f32 staging (Omega; the Gram-Schmidt fallback), Ritz vectors, the small eigenproblem.
  std::vector<double> Q(lD), V((size_t)rank * D), Wt(ll), w(l), work(subspace_work(l));
  std::vector<float> Qh(lD), Xh(lD), sigma_h(rank), SV_h((size_t)rank * D), proj_h((size_t)D * rank);
  std::vector<int> ord(l);

  // 0. max|K| (and a NaN / inf check), then K / 2^e so that G can neither overflow nor underflow.
  unsigned fl[2] = {0, 0};
  SKV_CUDA_CALL(cudaMemsetAsync(flags, 0, 2 * sizeof(unsigned), stream));
  AbsMaxKernel<<<(int)std::min<int64_t>(skv_ceil_div(SD, REDUCE_THREADS), 1024), REDUCE_THREADS, 0, stream>>>(K, SD, flags);
  SKV_LAUNCH_CHECK();
  SKV_CUDA_CALL(cudaMemcpyAsync(fl, flags, sizeof(fl), cudaMemcpyDeviceToHost, stream));
  SKV_CUDA_CALL(cudaStreamSynchronize(stream));
  if (fl[1]) return cudaSuccess;  // SKV_LOW_RANK_ARG: nothing written
  float amax;
  memcpy(&amax, &fl[0], 4);
  const int e = scale_exponent(amax);
  if (e) SKV_CUDA_CALL(scale_keys(K, SD, ldexpf(1.f, -e), stream));
  // 1. Gram matrix G = K^T K.
  SKV_CUDA_CALL(Gram(K, S, D, D, G, SkvWorkspace{base + gram_at, gram_bytes}, stream));
  // 2. X = Omega G, then power_iters rounds of X = Q G (G is symmetric, so X^T = G Q^T), each
  //    orthonormalized. Host threads serve the Choleskys, the eigensolve and the Gram-Schmidt fallback
  //    when the products are large enough to pay for them (176 x 176 x 1024 is 32 M multiply-adds); the
  //    bits do not depend on it.
  HostPool pool((uint64_t)l * l * D >= (1u << 22) ? HostPool::default_threads() : 1);
  const HostTasks tasks = pool.tasks();
  uint64_t rng = 0x5D1A0C3Bull ^ ((uint64_t)seed << 32 | seed);
  for (size_t i = 0; i < lD; i++) Qh[i] = (float)uniform(rng);
  SKV_CUDA_CALL(cudaMemcpyAsync(sub.Qf, Qh.data(), sizeof(float) * lD, cudaMemcpyHostToDevice, stream));
  for (int it = 0; it <= power_iters; it++) {
    SKV_CUDA_CALL(Gemm(l, D, D, 1.f, sub.Qf, SKV_F32, D, 0, nullptr, G, SKV_F32, D, 0, 0.f, sub.X, D, stream));
    SKV_CUDA_CALL(orthonormalize_rows(sub, Q, Xh, Qh, work, rng, tasks, stream));
  }
  // 3. Rayleigh-Ritz: T = Q X^T = Q G Q^T, eigenpairs descending, V_r = eigvecs[:, :rank]^T Q, signed.
  SKV_CUDA_CALL(Gemm(l, D, D, 1.f, sub.Qf, SKV_F32, D, 0, nullptr, G, SKV_F32, D, 0, 0.f, sub.X, D, stream));
  SKV_CUDA_CALL(products_f64::RowDots(l, l, D, sub.Q, sub.X, sub.W, stream));
  SKV_CUDA_CALL(cudaMemcpyAsync(sub.Wh.data(), sub.W, sizeof(double) * ll, cudaMemcpyDeviceToHost, stream));
  SKV_CUDA_CALL(cudaStreamSynchronize(stream));
  ritz_pairs(sub.Wh.data(), l, rank, Wt.data(), w.data(), ord.data(), work.data(), tasks);
  SKV_CUDA_CALL(cudaMemcpyAsync(sub.M, sub.Wh.data(), sizeof(double) * rank * l, cudaMemcpyHostToDevice, stream));
  SKV_CUDA_CALL(products_f64::CombineRows(rank, D, l, sub.M, sub.Q, sub.Q1, (float*)nullptr, stream));
  SKV_CUDA_CALL(cudaMemcpyAsync(V.data(), sub.Q1, sizeof(double) * rank * D, cudaMemcpyDeviceToHost, stream));
  SKV_CUDA_CALL(cudaStreamSynchronize(stream));
  sign_rows(V.data(), rank, D);
  // 4. sigma and SV (times 2^e: the keys' scale); proj still for the scaled keys, for step 5.
  const double up = ldexp(1.0, e);
  const double s1 = sqrt(std::max(w[ord[0]], 0.0));
  for (int i = 0; i < rank; i++) {
    double si = sqrt(std::max(w[ord[i]], 0.0));
    double inv = si > 1e-6 * s1 ? 1.0 / si : 0.0;  // NOTE: directions at noise level are dropped
    sigma_h[i] = (float)(si * up);
    for (int k = 0; k < D; k++) {
      SV_h[(size_t)i * D + k] = (float)(si * up * V[(size_t)i * D + k]);
      proj_h[(size_t)k * rank + i] = (float)(V[(size_t)i * D + k] * inv);
    }
  }
  SKV_CUDA_CALL(cudaMemcpyAsync(sigma, sigma_h.data(), sizeof(float) * rank, cudaMemcpyHostToDevice, stream));
  SKV_CUDA_CALL(cudaMemcpyAsync(SV, SV_h.data(), sizeof(float) * rank * (size_t)D, cudaMemcpyHostToDevice, stream));
  SKV_CUDA_CALL(cudaMemcpyAsync(proj, proj_h.data(), sizeof(float) * rank * (size_t)D, cudaMemcpyHostToDevice, stream));
  // 5. U = K proj [S x rank]; the scales cancel: (K / 2^e) (proj 2^e). Large: tensor cores (gemm.cu).
  SKV_CUDA_CALL(Gemm(S, rank, D, 1.f, K, SKV_F32, D, 0, nullptr, proj, SKV_F32, rank, 0, 0.f, U, rank, stream));
  // 6. proj for the caller's keys (/ 2^e, rounded once from float64), and K restored.
  if (e) {
    const double down = ldexp(1.0, -e);
    for (int i = 0; i < rank; i++) {
      double si = sqrt(std::max(w[ord[i]], 0.0));
      double inv = si > 1e-6 * s1 ? down / si : 0.0;
      for (int k = 0; k < D; k++) proj_h[(size_t)k * rank + i] = (float)(V[(size_t)i * D + k] * inv);
    }
    SKV_CUDA_CALL(cudaMemcpyAsync(proj, proj_h.data(), sizeof(float) * rank * (size_t)D, cudaMemcpyHostToDevice, stream));
    SKV_CUDA_CALL(scale_keys(K, SD, ldexpf(1.f, e), stream));
  }
  // NOTE: the host vectors die with this call: every copy from them has finished after this.
  SKV_CUDA_CALL(cudaStreamSynchronize(stream));
  *status = SKV_LOW_RANK_OK;
  return cudaSuccess;
}
