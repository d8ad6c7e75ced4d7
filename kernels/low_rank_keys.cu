// Truncated factorization of pre-RoPE keys: K [S x D] ~ U SV, from the Gram matrix G = K^T K, the
// method of runtime/wasm/low_rank_keys.cc step for step: 0. K scaled by a power of two (max|K| in
// [0.5, 1)); 1. G on the device (the expensive part: S D^2 MACs; tensor cores, gram.cu);
// 2. randomized subspace iteration, X = Q G on the device and the orthonormalization on the host
// in float64, with the same splitmix64 Omega; 3. Rayleigh-Ritz, the small float64 eigensolve on
// the host (the wasm runtime's own subspace.h); 4. sigma, SV, proj; 5. U = K proj on
// the device; 6. the scale undone. Only l x D and l x l matrices cross to the host (prefill may
// synchronize).
#include <float.h>
#include <math.h>
#include <string.h>
#include <algorithm>
#include <cmath>
#include <vector>
#include "../runtime/wasm/subspace.h"
#include "common.cuh"
#include "host_pool.h"

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

}  // namespace

cudaError_t LowRankKeys(float* K, int S, int D, int rank, int oversample, int power_iters, uint32_t seed, float* U,
                        float* SV, float* proj, float* sigma, int* status, cudaStream_t stream) {
  *status = SKV_LOW_RANK_ARG;
  if (S <= 0 || D <= 0 || rank <= 0 || rank > S || rank > D || oversample < 0 || power_iters < 0) return cudaSuccess;
  const int l = (int)std::min<int64_t>((int64_t)rank + oversample, D);  // subspace width
  const size_t DD = (size_t)D * D, lD = (size_t)l * D, ll = (size_t)l * l;
  const int64_t SD = (int64_t)S * D;
  // Device: flags (2 words, padded to 16 bytes), G [D x D], Qf [l x D], X [l x D], the Gram's workspace.
  const size_t gram_at = (16 + sizeof(float) * (DD + 2 * lD) + 255) / 256 * 256, gram_bytes = GramWorkspace(S, D);
  DeviceBlock block;
  if (cudaMalloc(&block.p, gram_at + gram_bytes) != cudaSuccess) {
    cudaGetLastError();  // clear the allocation failure; it is reported as a status
    *status = SKV_LOW_RANK_ALLOC;
    return cudaSuccess;
  }
  unsigned* flags = static_cast<unsigned*>(block.p);
  float* G = reinterpret_cast<float*>(static_cast<char*>(block.p) + 16);
  float* Qf = G + DD;
  float* X = Qf + lD;
  // Host: float64 basis, Ritz vectors, the small eigenproblem; f32 staging of Q and X.
  std::vector<double> Q(lD), V((size_t)rank * D), T(ll), Wt(ll), w(l), work(subspace_work(l));
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
  SKV_CUDA_CALL(Gram(K, S, D, D, G, SkvWorkspace{static_cast<char*>(block.p) + gram_at, gram_bytes}, stream));
  // 2. X = Omega G, then power_iters rounds of X = Q G (G is symmetric, so X^T = G Q^T). The host
  //    steps run on host threads, started while the GPU computes G, when they are large enough to
  //    pay for them (176 x 176 x 1024 is 32 M multiply-adds a product); the bits do not depend on it.
  HostPool pool((uint64_t)l * l * D >= (1u << 22) ? HostPool::default_threads() : 1);
  const HostTasks tasks = pool.tasks();
  uint64_t rng = 0x5D1A0C3Bull ^ ((uint64_t)seed << 32 | seed);
  for (size_t i = 0; i < lD; i++) Qh[i] = (float)uniform(rng);
  for (int it = 0; it <= power_iters; it++) {
    SKV_CUDA_CALL(cudaMemcpyAsync(Qf, Qh.data(), sizeof(float) * lD, cudaMemcpyHostToDevice, stream));
    SKV_CUDA_CALL(Gemm(l, D, D, 1.f, Qf, SKV_F32, D, 0, nullptr, G, SKV_F32, D, 0, 0.f, X, D, stream));
    SKV_CUDA_CALL(cudaMemcpyAsync(Xh.data(), X, sizeof(float) * lD, cudaMemcpyDeviceToHost, stream));
    SKV_CUDA_CALL(cudaStreamSynchronize(stream));
    orthonormalize(Xh.data(), l, D, Q.data(), work.data(), rng, tasks);
    for (size_t i = 0; i < lD; i++) Qh[i] = (float)Q[i];
  }
  // 3. Rayleigh-Ritz: T = Q^T G Q, eigenpairs descending, V_r = Q eigvecs[:, :rank].
  SKV_CUDA_CALL(cudaMemcpyAsync(Qf, Qh.data(), sizeof(float) * lD, cudaMemcpyHostToDevice, stream));
  SKV_CUDA_CALL(Gemm(l, D, D, 1.f, Qf, SKV_F32, D, 0, nullptr, G, SKV_F32, D, 0, 0.f, X, D, stream));
  SKV_CUDA_CALL(cudaMemcpyAsync(Xh.data(), X, sizeof(float) * lD, cudaMemcpyDeviceToHost, stream));
  SKV_CUDA_CALL(cudaStreamSynchronize(stream));
  rayleigh_matrix(Q.data(), Xh.data(), l, D, T.data(), tasks);
  ritz(T.data(), l, Q.data(), D, rank, Wt.data(), w.data(), ord.data(), V.data(), work.data(), tasks);
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
