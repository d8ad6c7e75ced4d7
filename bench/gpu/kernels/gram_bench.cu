// Standalone check and timing of the prefill products on the tensor cores (kernels/gram.cu, the
// split-bf16 path of kernels/gemm.cu) at Llama-3-8B geometry: keys S = 131072 x D = 1024 (8 kv
// heads x 128), rank 160. Compares against float64 products computed on the GPU, times with
// cudaEvents (median of 20), times the whole LowRankKeys and the other device steps of one
// layer's prefill compression (policies/shadowkv/compress.ts), and the subspace steps of
// LowRankKeys (device float64 products, host Cholesky and eigensolve) on their own. Needs no Node.js: built with nvcc by bench/gpu/kernels/build.sh.
// Usage: gram_bench [S]   (default 131072); exits 1 if an accuracy check fails.
//
// NOTE: it includes kernels/gemm.cu and kernels/gram.cu, so it can time the SIMT kernel and call
// the split paths on small odd shapes directly (llama2.c's test.c trick); they are not linked again.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>
#include "../../../kernels/gemm.cu"
#include "../../../kernels/gram.cu"
#include "../../../kernels/cholesky_qr.h"
#include "../../../kernels/host_pool.h"
#include "../../../kernels/products_f64.cuh"
#include "../../../kernels/eigenvectors.cuh"
#include "../../../runtime/wasm/subspace.h"

#include "bench_util.cuh"

static int failures = 0;
static void expect(bool ok, const char* what) {
  if (!ok) {
    printf("  FAIL: %s\n", what);
    failures++;
  }
}

// ---------------------------------------------------------------- data

__host__ __device__ inline uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
__device__ inline float unif(uint64_t seed, uint64_t i) { return ((mix64(seed * 0x100000001B3ull + i) >> 40) + 0.5f) * 0x1.0p-24f; }
__device__ inline float gauss(uint64_t seed, uint64_t i) {
  return sqrtf(-2.f * logf(unif(seed, 2 * i))) * cospif(2.f * unif(seed, 2 * i + 1));
}
__device__ inline float round_bf16(float x) { return __uint_as_float(f32_to_bf16(x) << 16); }

enum Kind { GAUSS = 0, BAD_SCALE = 1, BF16_EXACT = 2, KEYS = 3 };
static const char* kind_name[] = {"gaussian", "columns scaled 2^-20..2^20", "bf16-exact, power-of-two column scales", "keys-like (rank-48 signal + channel means + noise)"};

// A [S x D]: N(0,1) times a per-column scale (BAD_SCALE, BF16_EXACT), or KEYS: lowrank (precomputed, added) + mean + noise.
__global__ void FillKernel(float* A, int64_t S, int D, int kind, uint64_t seed) {
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < S * D; t += (int64_t)gridDim.x * blockDim.x) {
    const int c = (int)(t % D);
    float x = gauss(seed, t);
    if (kind == BAD_SCALE) x = ldexpf(x, (int)(mix64(seed ^ (uint64_t)c) % 41) - 20);
    if (kind == BF16_EXACT) x = ldexpf(round_bf16(x), (int)(mix64(seed ^ (uint64_t)c) % 13) - 6);
    if (kind == KEYS) x = A[t] + 0.05f * x + (c % 128 < 4 ? 3.f : 0.2f) * (gauss(seed + 1, c) + 1.f);
    A[t] = x;
  }
}

// A [S x D] = F [S x R] W [R x D] (the signal of the keys-like data).
__global__ void LowRankKernel(float* A, int64_t S, int D, const float* F, const float* W, int R) {
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < S * D; t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = t / D;
    const int c = (int)(t % D);
    float v = 0.f;
    for (int r = 0; r < R; r++) v += F[s * R + r] * W[(int64_t)r * D + c];
    A[t] = v;
  }
}

__global__ void GaussKernel(float* x, int64_t n, float scale, uint64_t seed) {
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += (int64_t)gridDim.x * blockDim.x)
    x[t] = scale * gauss(seed, t);
}

static void fill(float* A, int64_t S, int D, int kind, uint64_t seed) {
  if (kind == KEYS) {
    const int R = 48;
    float *F, *W;
    CK(cudaMalloc(&F, sizeof(float) * S * R));
    CK(cudaMalloc(&W, sizeof(float) * R * D));
    GaussKernel<<<4096, 256>>>(F, S * R, 1.f, seed + 7);
    GaussKernel<<<256, 256>>>(W, (int64_t)R * D, 1.f, seed + 8);
    // a decaying spectrum: row r of W scaled by 0.9^r
    std::vector<float> w((size_t)R * D);
    CK(cudaMemcpy(w.data(), W, sizeof(float) * w.size(), cudaMemcpyDeviceToHost));
    for (int r = 0; r < R; r++)
      for (int c = 0; c < D; c++) w[(size_t)r * D + c] *= powf(0.9f, (float)r);
    CK(cudaMemcpy(W, w.data(), sizeof(float) * w.size(), cudaMemcpyHostToDevice));
    LowRankKernel<<<8192, 256>>>(A, S, D, F, W, R);
    CK(cudaFree(F));
    CK(cudaFree(W));
  }
  FillKernel<<<8192, 256>>>(A, S, D, kind, seed);
  CK(cudaGetLastError());
}

// ---------------------------------------------------------------- float64 reference

// C[i][j] = sum_k opA(i,k) opB(k,j) and Cabs = sum_k |opA(i,k) opB(k,j)|, both float64 (products of
// f32 are exact in f64). opA(i,k) = A[row(i)*sai + k*sak], opB(k,j) = B[k*sbk + j*sbj].
__global__ void __launch_bounds__(256) RefGemmKernel(int M, int N, int K, const float* A, int64_t sai, int64_t sak,
                                                     const int32_t* rows, const float* B, int64_t sbk, int64_t sbj,
                                                     double* C, double* Cabs) {
  __shared__ double As[16][65], Bs[16][65];
  const int i0 = blockIdx.y * 64, j0 = blockIdx.x * 64, tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  double acc[4][4] = {}, aab[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += 16) {
    for (int l = threadIdx.x; l < 64 * 16; l += 256) {
      const int r = l % 64, kk = l / 64, i = i0 + r, j = j0 + r, k = k0 + kk;
      As[kk][r] = i < M && k < K ? (double)A[(rows ? (int64_t)rows[i] : i) * sai + k * sak] : 0.0;
      Bs[kk][r] = j < N && k < K ? (double)B[k * sbk + j * sbj] : 0.0;
    }
    __syncthreads();
    for (int kk = 0; kk < 16; kk++)
      for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) {
          const double p = As[kk][ty * 4 + a] * Bs[kk][tx * 4 + b];
          acc[a][b] += p;
          aab[a][b] += fabs(p);
        }
    __syncthreads();
  }
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 4; b++) {
      const int i = i0 + ty * 4 + a, j = j0 + tx * 4 + b;
      if (i < M && j < N) {
        C[(int64_t)i * N + j] = acc[a][b];
        Cabs[(int64_t)i * N + j] = aab[a][b];
      }
    }
}

struct Ref {
  std::vector<double> c, abs;
};

static Ref ref_gemm(int M, int N, int K, const float* A, int64_t sai, int64_t sak, const int32_t* rows, const float* B,
                    int64_t sbk, int64_t sbj) {
  double *C, *Cabs;
  CK(cudaMalloc(&C, sizeof(double) * M * N));
  CK(cudaMalloc(&Cabs, sizeof(double) * M * N));
  RefGemmKernel<<<dim3((N + 63) / 64, (M + 63) / 64), 256>>>(M, N, K, A, sai, sak, rows, B, sbk, sbj, C, Cabs);
  CK(cudaGetLastError());
  Ref r{std::vector<double>((size_t)M * N), std::vector<double>((size_t)M * N)};
  CK(cudaMemcpy(r.c.data(), C, sizeof(double) * M * N, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(r.abs.data(), Cabs, sizeof(double) * M * N, cudaMemcpyDeviceToHost));
  CK(cudaFree(C));
  CK(cudaFree(Cabs));
  return r;
}

// Errors of C [M x N] (row stride ldc): `abs` = max |C - ref| / sum|a b| (the dot product's own
// scale; f32 gives ~K 2^-24 at worst), `rel` = max |C - ref| / |ref| over entries with |ref| at
// least 1 % of sum|a b| (no cancellation), `diag` = the largest relative error on the diagonal.
struct Err {
  double abs = 0, rel = 0, diag = 0;
};
static Err errors(const float* C, int64_t ldc, const Ref& r, int M, int N, double beta_c0 = 0, const float* C0 = nullptr) {
  Err e;
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      const size_t t = (size_t)i * N + j;
      const double want = r.c[t] + (C0 ? beta_c0 * C0[(size_t)i * ldc + j] : 0.0);
      const double d = fabs((double)C[(size_t)i * ldc + j] - want);
      if (r.abs[t] > 0) e.abs = std::max(e.abs, d / r.abs[t]);
      else if (d > 0) e.abs = INFINITY;
      if (fabs(want) >= 0.01 * r.abs[t] && want != 0) e.rel = std::max(e.rel, d / fabs(want));
      if (i == j && want != 0) e.diag = std::max(e.diag, d / fabs(want));
    }
  return e;
}

// ---------------------------------------------------------------- timing (median_ms: bench_util.cuh)

static double host_ms(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// The SIMT kernel of gemm.cu, whatever the size (Gemm itself would take the split path).
static void simt_gemm(int M, int N, int K, const float* A, int64_t lda, int transA, const float* B, int64_t ldb, float* C,
                      int64_t ldc) {
  GemmParams p{M, N, K, 1.f, 0.f, A, SKV_F32, lda, transA, nullptr, B, SKV_F32, ldb, 0, C, ldc};
  GemmKernel<<<dim3((N + TILE_N - 1) / TILE_N, (M + TILE_M - 1) / TILE_M), GEMM_THREADS>>>(p);
  CK(cudaGetLastError());
}

// ---------------------------------------------------------------- checks

static const double TOL_ABS = 2e-5;  // split bf16: ~2^-16 per product at worst, sums in f32

// Gram and split GEMM on small odd shapes: tails in every dimension, unaligned strides, a_rows, beta.
static void odd_shapes() {
  printf("odd shapes (tails, unaligned strides, a_rows, beta)\n");
  struct G { int S, D; int64_t ld; };
  for (G g : {G{1001, 200, 203}, G{777, 256, 256}, G{5, 130, 132}, G{4097, 64, 64}}) {
    float *K, *Gm;
    void* ws;
    CK(cudaMalloc(&K, sizeof(float) * g.S * g.ld));
    CK(cudaMalloc(&Gm, sizeof(float) * g.D * g.D));
    fill(K, g.S, (int)g.ld, GAUSS, 11);
    GramPlan plan;
    CK(plan_gram(g.S, g.D, &plan));
    const size_t wb = split_gram_bytes(plan);
    CK(cudaMalloc(&ws, wb));
    CK(split_gram(K, g.S, g.D, g.ld, Gm, SkvWorkspace{ws, wb}, 0));
    Ref r = ref_gemm(g.D, g.D, g.S, K, 1, g.ld, nullptr, K, g.ld, 1);
    std::vector<float> h((size_t)g.D * g.D);
    CK(cudaMemcpy(h.data(), Gm, sizeof(float) * h.size(), cudaMemcpyDeviceToHost));
    Err e = errors(h.data(), g.D, r, g.D, g.D);
    bool sym = true;
    for (int i = 0; i < g.D; i++)
      for (int j = 0; j < i; j++) sym = sym && h[(size_t)i * g.D + j] == h[(size_t)j * g.D + i];
    printf("  split Gram S=%d D=%d ld=%lld (%d slices): max err/sum|ab| %.2e, rel %.2e, diag rel %.2e, symmetric %s\n", g.S, g.D,
           (long long)g.ld, plan.slices, e.abs, e.rel, e.diag, sym ? "yes" : "NO");
    expect(e.abs < TOL_ABS && sym, "Gram odd shape");
    CK(cudaFree(K));
    CK(cudaFree(Gm));
    CK(cudaFree(ws));
  }
  // C [M x N] = 1.5 op(A) B + beta C0.
  const int M = 1000, N = 170, Kd = 300, rowsA = 1200;
  for (int transA = 0; transA < 2; transA++) {
    const int64_t lda = transA ? 1003 : 301, ldb = 171, ldc = 173;
    float *A, *B, *C;
    int32_t* rows;
    CK(cudaMalloc(&A, sizeof(float) * rowsA * 1003));
    CK(cudaMalloc(&B, sizeof(float) * Kd * ldb));
    CK(cudaMalloc(&C, sizeof(float) * M * ldc));
    CK(cudaMalloc(&rows, sizeof(int32_t) * M));
    fill(A, rowsA, 1003, GAUSS, 21);
    fill(B, Kd, (int)ldb, GAUSS, 22);
    fill(C, M, (int)ldc, GAUSS, 23);
    std::vector<int32_t> rh(M);
    for (int i = 0; i < M; i++) rh[i] = (int32_t)(mix64(i) % rowsA);
    CK(cudaMemcpy(rows, rh.data(), sizeof(int32_t) * M, cudaMemcpyHostToDevice));
    std::vector<float> c0((size_t)M * ldc), c((size_t)M * ldc);
    CK(cudaMemcpy(c0.data(), C, sizeof(float) * c0.size(), cudaMemcpyDeviceToHost));
    GemmParams p{M, N, Kd, 1.5f, 0.5f, A, SKV_F32, lda, transA, transA ? nullptr : rows, B, SKV_F32, ldb, 0, C, ldc};
    CK(transA ? split_gemm<true>(p, 0) : split_gemm<false>(p, 0));
    CK(cudaMemcpy(c.data(), C, sizeof(float) * c.size(), cudaMemcpyDeviceToHost));
    Ref r = transA ? ref_gemm(M, N, Kd, A, 1, lda, nullptr, B, ldb, 1) : ref_gemm(M, N, Kd, A, lda, 1, rows, B, ldb, 1);
    for (auto& v : r.c) v *= 1.5;
    for (auto& v : r.abs) v *= 1.5;
    Err e = errors(c.data(), ldc, r, M, N, 0.5, c0.data());
    printf("  split Gemm M=%d N=%d K=%d transA=%d%s beta=0.5: max err/sum|ab| %.2e, rel %.2e\n", M, N, Kd, transA,
           transA ? "" : " a_rows", e.abs, e.rel);
    expect(e.abs < TOL_ABS, "split Gemm odd shape");
    CK(cudaFree(A));
    CK(cudaFree(B));
    CK(cudaFree(C));
    CK(cudaFree(rows));
  }
}

// Gram of S x D keys of each kind: errors of the split path and of the SIMT f32 kernel, times.
static void gram_at_scale(int S, int D, float* K, float* G, SkvWorkspace ws) {
  printf("Gram G = K^T K, S=%d D=%d (%.0f G multiply-adds), workspace %.1f MB\n", S, D, (double)S * D * D / 1e9,
         ws.bytes / 1e6);
  std::vector<float> h((size_t)D * D), h2((size_t)D * D);
  for (int kind : {GAUSS, BAD_SCALE, BF16_EXACT, KEYS}) {
    fill(K, S, D, kind, 100 + kind);
    CK(Gram(K, S, D, D, G, ws, 0));
    CK(cudaMemcpy(h.data(), G, sizeof(float) * h.size(), cudaMemcpyDeviceToHost));
    CK(Gram(K, S, D, D, G, ws, 0));
    CK(cudaMemcpy(h2.data(), G, sizeof(float) * h2.size(), cudaMemcpyDeviceToHost));
    const bool same = memcmp(h.data(), h2.data(), sizeof(float) * h.size()) == 0;
    Ref r = ref_gemm(D, D, S, K, 1, D, nullptr, K, D, 1);
    Err e = errors(h.data(), D, r, D, D);
    simt_gemm(D, D, S, K, D, 1, K, D, G, D);
    CK(cudaMemcpy(h2.data(), G, sizeof(float) * h2.size(), cudaMemcpyDeviceToHost));
    Err s = errors(h2.data(), D, r, D, D);
    printf("  %-52s split bf16: err/sum|ab| %.2e, rel %.2e, diag rel %.2e, deterministic %s | SIMT f32: %.2e, %.2e, %.2e\n",
           kind_name[kind], e.abs, e.rel, e.diag, same ? "yes" : "NO", s.abs, s.rel, s.diag);
    expect(e.abs < TOL_ABS && same, "Gram at scale");
  }
  const float t_split = median_ms(20, [&] { CK(Gram(K, S, D, D, G, ws, 0)); });
  const float t_simt = median_ms(3, [&] { simt_gemm(D, D, S, K, D, 1, K, D, G, D); });
  const double flops = 2.0 * S * D * D;
  printf("  time: split bf16 Gram %.3f ms (%.0f f32-equivalent TFLOP/s), SIMT f32 Gemm %.3f ms (%.1f TFLOP/s)\n",
         t_split, flops / t_split / 1e9, t_simt, flops / t_simt / 1e9);
}

// U = K proj [S x rank] through Gemm (the split path at this size), against f64 and the SIMT kernel.
static void u_at_scale(int S, int D, int rank, float* K, float* U) {
  printf("U = K proj, S=%d D=%d rank=%d (%.1f G multiply-adds)\n", S, D, rank, (double)S * D * rank / 1e9);
  float* proj;
  CK(cudaMalloc(&proj, sizeof(float) * D * rank));
  GaussKernel<<<256, 256>>>(proj, (int64_t)D * rank, 1.f / 32.f, 5);
  std::vector<float> h((size_t)S * rank);
  for (int kind : {GAUSS, BAD_SCALE, KEYS}) {
    fill(K, S, D, kind, 200 + kind);
    CK(Gemm(S, rank, D, 1.f, K, SKV_F32, D, 0, nullptr, proj, SKV_F32, rank, 0, 0.f, U, rank, 0));
    CK(cudaMemcpy(h.data(), U, sizeof(float) * h.size(), cudaMemcpyDeviceToHost));
    Ref r = ref_gemm(S, rank, D, K, D, 1, nullptr, proj, rank, 1);
    Err e = errors(h.data(), rank, r, S, rank);
    simt_gemm(S, rank, D, K, D, 0, proj, rank, U, rank);
    CK(cudaMemcpy(h.data(), U, sizeof(float) * h.size(), cudaMemcpyDeviceToHost));
    Err s = errors(h.data(), rank, r, S, rank);
    printf("  %-52s split bf16: err/sum|ab| %.2e, rel %.2e | SIMT f32: %.2e, %.2e\n", kind_name[kind], e.abs, e.rel,
           s.abs, s.rel);
    expect(e.abs < TOL_ABS, "U at scale");
  }
  const float t_split = median_ms(20, [&] { CK(Gemm(S, rank, D, 1.f, K, SKV_F32, D, 0, nullptr, proj, SKV_F32, rank, 0, 0.f, U, rank, 0)); });
  const float t_simt = median_ms(3, [&] { simt_gemm(S, rank, D, K, D, 0, proj, rank, U, rank); });
  const double flops = 2.0 * S * D * rank;
  printf("  time: split bf16 %.3f ms (%.0f TFLOP/s), SIMT f32 %.3f ms (%.1f TFLOP/s)\n", t_split, flops / t_split / 1e9,
         t_simt, flops / t_simt / 1e9);
  CK(cudaFree(proj));
}

__global__ void ResidualKernel(const float* K, const float* U, const float* SV, int64_t S, int D, int rank, double* out) {
  double r2 = 0, k2 = 0;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < S * D; t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = t / D;
    const int c = (int)(t % D);
    double v = 0;
    for (int i = 0; i < rank; i++) v += (double)U[s * rank + i] * SV[(int64_t)i * D + c];
    const double k = K[t];
    r2 += (k - v) * (k - v);
    k2 += k * k;
  }
  atomicAdd(&out[0], r2);
  atomicAdd(&out[1], k2);
}

// The device triangular solve (products_f64::LowerSolve) against forward substitution on the host,
// with the Cholesky factor of a real pass (X X^T of random rows): the rows it gives must agree to
// rounding and be orthonormal. Shapes: LowRankKeys' l x D, and an l past 8 warps' 48 KB of columns.
static void solve_check(int l, int D) {
  std::vector<float> X((size_t)l * D);
  uint64_t rng = 7 + l;
  for (auto& x : X) x = (float)uniform(rng);
  std::vector<double> W((size_t)l * l), L((size_t)l * l), B((size_t)l * D), Bd((size_t)l * D);
  for (int a = 0; a < l; a++)
    for (int b = 0; b <= a; b++) {
      double t = 0;
      for (int k = 0; k < D; k++) t += (double)X[(size_t)a * D + k] * X[(size_t)b * D + k];
      W[(size_t)a * l + b] = W[(size_t)b * l + a] = t;
    }
  expect(cholesky_lower(W.data(), l, L.data()), "solve check: cholesky_lower of X X^T");
  for (int i = 0; i < l; i++)
    for (int x = 0; x < D; x++) {
      double t = X[(size_t)i * D + x];
      for (int j = 0; j < i; j++) t -= L[(size_t)i * l + j] * B[(size_t)j * D + x];
      B[(size_t)i * D + x] = t / L[(size_t)i * l + i];
    }
  float *Xd, *Bf;
  double *Ld, *Bdd;
  CK(cudaMalloc(&Xd, sizeof(float) * l * D));
  CK(cudaMalloc(&Bf, sizeof(float) * l * D));
  CK(cudaMalloc(&Ld, sizeof(double) * l * l));
  CK(cudaMalloc(&Bdd, sizeof(double) * l * D));
  CK(cudaMemcpy(Xd, X.data(), sizeof(float) * l * D, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(Ld, L.data(), sizeof(double) * l * l, cudaMemcpyHostToDevice));
  CK(products_f64::LowerSolve(l, D, Ld, Xd, Bdd, Bf, 0));
  CK(cudaMemcpy(Bd.data(), Bdd, sizeof(double) * l * D, cudaMemcpyDeviceToHost));
  std::vector<float> Bfh((size_t)l * D);
  CK(cudaMemcpy(Bfh.data(), Bf, sizeof(float) * l * D, cudaMemcpyDeviceToHost));
  double err = 0, ferr = 0, orth = 0;
  for (size_t i = 0; i < B.size(); i++) {
    err = std::max(err, fabs(Bd[i] - B[i]));
    ferr = std::max(ferr, fabs((double)Bfh[i] - (double)(float)Bd[i]));
  }
  for (int a = 0; a < l; a++)
    for (int b = 0; b <= a; b++) {
      double t = 0;
      for (int k = 0; k < D; k++) t += Bd[(size_t)a * D + k] * Bd[(size_t)b * D + k];
      orth = std::max(orth, fabs(t - (a == b ? 1.0 : 0.0)));
    }
  printf("  solve check l=%d D=%d: max |device - host| %.2e, f32 copy off by %.2e, max |B B^T - I| %.2e\n", l, D, err, ferr, orth);
  expect(err <= 1e-10 && ferr == 0 && orth <= 1e-10, "LowerSolve matches forward substitution, rows orthonormal");
  for (void* p : {(void*)Xd, (void*)Bf, (void*)Ld, (void*)Bdd}) CK(cudaFree(p));
}

// The eigenvectors of a Rayleigh-Ritz-like matrix (decaying spectrum, l x l) formed on the device
// (eigenvectors.cuh: Householder Q, then the QL rotations) against symmetric_eigen on the host: the
// same bits are asked for, and the device part is timed.
static void eigenvectors_check(int l) {
  const size_t ll = (size_t)l * l;
  std::vector<double> Q(ll), T(ll), A, Vt(ll), w(l), w2(l), work(eigen_work(l)), Vd(ll);
  uint64_t rng = 99;
  for (auto& q : Q) q = uniform(rng);
  for (int a = 0; a < l; a++)
    for (int b = 0; b <= a; b++) {
      double s = 0;
      for (int k = 0; k < l; k++) s += Q[(size_t)a * l + k] * Q[(size_t)b * l + k] * pow(0.93, k);
      T[(size_t)a * l + b] = T[(size_t)b * l + a] = s;
    }
  A = T;
  symmetric_eigen(A.data(), l, Vt.data(), w.data(), work.data(), HostTasks());
  double *Ad, *Vtd, *logd;
  CK(cudaMalloc(&Ad, sizeof(double) * ll));
  CK(cudaMalloc(&Vtd, sizeof(double) * ll));
  const int max_rotations = 8 * (int)ll;  // the host's log flushes at l^2; a few logs in all
  CK(cudaMalloc(&logd, sizeof(double) * 3 * max_rotations));
  A = T;
  std::vector<double> e(l), p(l), log(3 * ll);
  auto t0 = std::chrono::steady_clock::now();
  tridiagonalize(A.data(), l, w2.data(), e.data(), p.data());
  const double t_reduce = host_ms(t0);
  CK(cudaMemcpy(Ad, A.data(), sizeof(double) * ll, cudaMemcpyHostToDevice));
  int rotations = 0;
  t0 = std::chrono::steady_clock::now();
  tridiagonal_ql(w2.data(), e.data(), l, log.data(), (int)ll, [&](const double* lg, int count) {
    if (rotations + count > max_rotations) return expect(false, "eigenvectors check: at most 8 l^2 rotations");
    CK(cudaMemcpy(logd + 3 * (size_t)rotations, lg, sizeof(double) * 3 * count, cudaMemcpyHostToDevice));
    rotations += count;
  });
  const double t_ql = host_ms(t0);
  const float t_q = median_ms(5, [&] { CK(eigenvectors::householder_q(Ad, l, Vtd, 0)); });
  const float t_rot = median_ms(1, [&] { CK(eigenvectors::rotate_rows(Vtd, l, logd, rotations, 0)); });
  CK(eigenvectors::householder_q(Ad, l, Vtd, 0));
  CK(eigenvectors::rotate_rows(Vtd, l, logd, rotations, 0));
  CK(cudaMemcpy(Vd.data(), Vtd, sizeof(double) * ll, cudaMemcpyDeviceToHost));
  size_t differ = 0;
  for (size_t i = 0; i < ll; i++) differ += memcmp(&Vd[i], &Vt[i], sizeof(double)) != 0;
  differ += memcmp(w.data(), w2.data(), sizeof(double) * l) != 0;
  printf("eigenvectors on the device, l = %d: %zu of %zu entries differ from the host's bits; host reduction %.2f ms, "
         "QL iteration %.2f ms (%d rotations); device Q %.3f ms, rotations %.3f ms\n",
         l, differ, ll, t_reduce, t_ql, rotations, t_q, t_rot);
  expect(differ == 0, "device eigenvectors = host eigenvectors, bit for bit");
  for (double* x : {Ad, Vtd, logd}) CK(cudaFree(x));
}

// LowRankKeys with its workspaces, grown once and kept, as the addon's binding keeps them.
static int low_rank_keys(float* K, int S, int D, int rank, int oversample, int power_iters, float* U, float* SV, float* proj,
                         float* sigma) {
  static SkvWorkspace ws{nullptr, 0}, pinned{nullptr, 0};
  const size_t wb = LowRankKeysWorkspace(S, D, rank, oversample, power_iters), pb = LowRankKeysPinned(S, D, rank, oversample, power_iters);
  if (ws.bytes < wb) {
    if (ws.ptr) CK(cudaFree(ws.ptr));
    CK(cudaMalloc(&ws.ptr, wb));
    ws.bytes = wb;
  }
  if (pinned.bytes < pb) {
    if (pinned.ptr) CK(cudaFreeHost(pinned.ptr));
    CK(cudaHostAlloc(&pinned.ptr, pb, cudaHostAllocDefault));
    pinned.bytes = pb;
  }
  int status = -1;
  CK(LowRankKeys(K, S, D, rank, oversample, power_iters, 0x5eed, U, SV, proj, sigma, ws, pinned, &status, 0));
  return status;
}

// compress.ts issues the values' copies to the host pages (bf16 [S x D], one per 256-chunk page)
// on a second stream (copyAside, runtime/cuda/memory.cc) before LowRankKeys: the copy engines work
// while the SMs compute. Times the copies alone, then LowRankKeys with them alongside.
static void aside_overlap(int S, int D, int rank, int oversample, int power_iters, float* K, float* U, float* SV,
                          float* proj, float* sigma, double t_alone) {
  const int64_t n = (int64_t)S * D, page = 256 * 8 * 128;
  uint16_t* v;
  void* host;
  cudaStream_t aside;
  CK(cudaMalloc(&v, sizeof(uint16_t) * n));
  CK(cudaMemset(v, 0, sizeof(uint16_t) * n));
  CK(cudaHostAlloc(&host, sizeof(uint16_t) * n, cudaHostAllocMapped | cudaHostAllocPortable));
  CK(cudaStreamCreateWithFlags(&aside, cudaStreamNonBlocking));
  auto issue = [&] {
    for (int64_t off = 0; off < n; off += page)
      CK(cudaMemcpyAsync(static_cast<uint16_t*>(host) + off, v + off, sizeof(uint16_t) * std::min(page, n - off), cudaMemcpyDefault, aside));
  };
  CK(cudaDeviceSynchronize());
  auto t0 = std::chrono::steady_clock::now();
  issue();
  const double t_issue = host_ms(t0);
  CK(cudaStreamSynchronize(aside));
  const double t_copies = host_ms(t0);
  std::vector<double> t;
  for (int rep = 0; rep < 3; rep++) {
    CK(cudaDeviceSynchronize());
    t0 = std::chrono::steady_clock::now();
    issue();
    const int status = low_rank_keys(K, S, D, rank, oversample, power_iters, U, SV, proj, sigma);
    CK(cudaDeviceSynchronize());
    t.push_back(host_ms(t0));
    expect(status == SKV_LOW_RANK_OK, "LowRankKeys status (copies alongside)");
  }
  std::sort(t.begin(), t.end());
  printf("  values alongside (%.1f MB in %lld copies on a second stream): copies alone %.2f ms (issued in %.2f); "
         "LowRankKeys %.1f ms alone, %.1f with them (median of 3), saving %.1f of %.1f\n",
         2.0 * n / 1e6, (long long)skv_ceil_div(n, page), t_copies, t_issue, t_alone, t[1], t_alone + t_copies - t[1], t_copies);
  CK(cudaStreamDestroy(aside));
  CK(cudaFreeHost(host));
  CK(cudaFree(v));
}

// The whole factorization: time (host clock, it synchronizes), the residual against what the
// sigmas promise, and the host float64 steps timed on their own.
static void low_rank_at_scale(int S, int D, int rank, float* K) {
  const int oversample = 16, power_iters = 2, l = rank + oversample;
  printf("LowRankKeys S=%d D=%d rank=%d oversample=%d power_iters=%d, keys-like data\n", S, D, rank, oversample, power_iters);
  fill(K, S, D, KEYS, 300);
  float *U, *SV, *proj, *sigma;
  CK(cudaMalloc(&U, sizeof(float) * S * rank));
  CK(cudaMalloc(&SV, sizeof(float) * rank * D));
  CK(cudaMalloc(&proj, sizeof(float) * D * rank));
  CK(cudaMalloc(&sigma, sizeof(float) * rank));
  std::vector<double> t;
  for (int rep = 0; rep < 3; rep++) {
    CK(cudaDeviceSynchronize());
    auto t0 = std::chrono::steady_clock::now();
    const int status = low_rank_keys(K, S, D, rank, oversample, power_iters, U, SV, proj, sigma);
    t.push_back(host_ms(t0));
    expect(status == SKV_LOW_RANK_OK, "LowRankKeys status");
  }
  std::sort(t.begin(), t.end());
  double* acc;
  CK(cudaMalloc(&acc, 2 * sizeof(double)));
  CK(cudaMemset(acc, 0, 2 * sizeof(double)));
  ResidualKernel<<<4096, 256>>>(K, U, SV, S, D, rank, acc);
  double rk[2];
  CK(cudaMemcpy(rk, acc, sizeof(rk), cudaMemcpyDeviceToHost));
  std::vector<float> sg(rank);
  CK(cudaMemcpy(sg.data(), sigma, sizeof(float) * rank, cudaMemcpyDeviceToHost));
  double kept = 0;
  for (float s : sg) kept += (double)s * s;
  const double promised = std::max(rk[1] - kept, 0.0) / rk[1], got = rk[0] / rk[1];
  printf("  total %.1f ms (median of 3: %.1f / %.1f / %.1f); sigma_1 %.4g, sigma_%d %.4g\n", t[1], t[0], t[1], t[2],
         sg[0], rank, sg[rank - 1]);
  printf("  |K - U SV|^2 / |K|^2 = %.6e, promised by the sigmas (1 - sum sigma^2 / |K|^2) %.6e\n", got, promised);
  // NOTE: the sigmas are Rayleigh quotients of the computed G, so they agree to the Gram's accuracy (~1e-5 of |K|^2).
  expect(fabs(got - promised) <= 2e-5, "LowRankKeys residual matches its sigmas");
  aside_overlap(S, D, rank, oversample, power_iters, K, U, SV, proj, sigma, t[1]);
  // Its steps between the Gram and U = K proj alone, same sizes: per orthonormalization (x power_iters + 1)
  // two CholeskyQR passes (X X^T and the solve on the device, the l x l Cholesky on the host), then
  // the Rayleigh matrix and the Ritz vectors on the device, the l x l eigensolve on the host; and the
  // host Gram-Schmidt that a refused pass falls back to.
  std::vector<float> X((size_t)l * D);
  std::vector<double> Q((size_t)l * D), T((size_t)l * l), Wt((size_t)l * l), w(l), V((size_t)rank * D), L((size_t)l * l);
  std::vector<int> ord(l);
  uint64_t rng = 1;
  for (auto& x : X) x = (float)uniform(rng);
  float *Xd, *Qf;
  double *Qd, *Q1d, *Wd, *Ld;
  CK(cudaMalloc(&Xd, sizeof(float) * l * D));
  CK(cudaMalloc(&Qf, sizeof(float) * l * D));
  CK(cudaMalloc(&Qd, sizeof(double) * l * D));
  CK(cudaMalloc(&Q1d, sizeof(double) * l * D));
  CK(cudaMalloc(&Wd, sizeof(double) * l * l));
  CK(cudaMalloc(&Ld, sizeof(double) * l * l));
  CK(cudaMemcpy(Xd, X.data(), sizeof(float) * l * D, cudaMemcpyHostToDevice));
  HostPool pool(HostPool::default_threads());  // as LowRankKeys runs them
  const HostTasks tasks = pool.tasks();
  std::vector<double> work(subspace_work(l));
  orthonormalize(X.data(), l, D, Q.data(), work.data(), rng, tasks);
  row_dots(Q.data(), l, Q.data(), l, D, T.data(), l);  // ~I: a Gram matrix that factors
  auto t0 = std::chrono::steady_clock::now();
  for (int it = 0; it < 2 * (power_iters + 1); it++) expect(cholesky_lower(T.data(), l, L.data()), "cholesky_lower of Q Q^T");
  const double t_chol = host_ms(t0);
  CK(cudaMemcpy(Ld, L.data(), sizeof(double) * l * l, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(Qd, Q.data(), sizeof(double) * l * D, cudaMemcpyHostToDevice));
  const float t_w1 = median_ms(20, [&] { CK(products_f64::RowDots(l, l, D, Xd, Xd, Wd, 0)); });
  const float t_w2 = median_ms(20, [&] { CK(products_f64::RowDots(l, l, D, Qd, Qd, Wd, 0)); });
  const float t_s1 = median_ms(20, [&] { CK(products_f64::LowerSolve(l, D, Ld, Xd, Q1d, (float*)nullptr, 0)); });
  const float t_s2 = median_ms(20, [&] { CK(products_f64::LowerSolve(l, D, Ld, Q1d, Qd, Qf, 0)); });
  const float t_T = median_ms(20, [&] { CK(products_f64::RowDots(l, l, D, Qd, Xd, Wd, 0)); });
  const float t_V = median_ms(20, [&] { CK(products_f64::CombineRows(rank, D, l, Ld, Qd, Q1d, (float*)nullptr, 0)); });
  // A Rayleigh-Ritz matrix with a decaying spectrum, like the keys'.
  for (int a = 0; a < l; a++)
    for (int b = 0; b < l; b++) {
      double s = 0;
      for (int k = 0; k < l; k++) s += Q[(size_t)a * D + k] * Q[(size_t)b * D + k] * pow(0.9, k);
      T[(size_t)a * l + b] = s;
    }
  t0 = std::chrono::steady_clock::now();
  ritz_pairs(T.data(), l, rank, Wt.data(), w.data(), ord.data(), work.data(), tasks);
  const double t_eig = host_ms(t0);
  t0 = std::chrono::steady_clock::now();
  for (int it = 0; it <= power_iters; it++) orthonormalize(X.data(), l, D, Q.data(), work.data(), rng, tasks);
  const double t_orth = host_ms(t0);
  const int passes = 2 * (power_iters + 1);
  printf("  subspace steps alone: device per pass X X^T %.3f / Q1 Q1^T %.3f ms, solves %.3f / %.3f ms (x%d each); T = Q X^T %.3f ms, "
         "V = E Q %.3f ms\n", t_w1, t_w2, t_s1, t_s2, power_iters + 1, t_T, t_V);
  printf("  host: %d Choleskys %dx%d %.1f ms (one thread); on %d threads: eigensolve %dx%d %.1f ms, Gram-Schmidt fallback x%d %.1f ms (only for refused passes)\n",
         passes, l, l, t_chol, pool.threads(), l, l, t_eig, power_iters + 1, t_orth);
  for (void* p : {(void*)Xd, (void*)Qf, (void*)Qd, (void*)Q1d, (void*)Wd, (void*)Ld}) CK(cudaFree(p));
  CK(cudaFree(U));
  CK(cudaFree(SV));
  CK(cudaFree(proj));
  CK(cudaFree(sigma));
  CK(cudaFree(acc));
}

// The device steps of compress.ts besides LowRankKeys, at one layer: pre-RoPE keys, the U/SV/proj
// conversions, landmarks and outlier selection, and the values copied to pinned host pages.
static void other_steps(int S, int Hkv, int d, int rank, float* Kf) {
  const int D = Hkv * d, C = 8, chunks = S / C, outliers = 48, page = 256 * C * d;
  printf("other prefill steps at S=%d, %d kv heads x %d (bf16 storage)\n", S, Hkv, d);
  uint16_t *kb, *vb, *ub;
  float *U, *lm, *mc;
  int32_t *pos, *sel, *cnt;
  double* inv_freq;
  void* host;
  CK(cudaMalloc(&kb, sizeof(uint16_t) * S * D));
  CK(cudaMalloc(&vb, sizeof(uint16_t) * S * D));
  CK(cudaMalloc(&ub, sizeof(uint16_t) * S * rank));
  CK(cudaMalloc(&U, sizeof(float) * S * rank));
  CK(cudaMalloc(&lm, sizeof(float) * chunks * d));
  CK(cudaMalloc(&mc, sizeof(float) * chunks));
  CK(cudaMalloc(&pos, sizeof(int32_t) * S));
  CK(cudaMalloc(&sel, sizeof(int32_t) * outliers));
  CK(cudaMalloc(&cnt, sizeof(int32_t)));
  CK(cudaMalloc(&inv_freq, sizeof(double) * d / 2));
  CK(cudaHostAlloc(&host, sizeof(uint16_t) * S * D, cudaHostAllocMapped | cudaHostAllocPortable));
  fill(Kf, S, D, GAUSS, 400);
  CK(Convert(Kf, SKV_F32, kb, SKV_BF16, (int64_t)S * D, 0));  // [Hkv][S][d] in the tail, like headK(h)
  CK(Convert(Kf, SKV_F32, vb, SKV_BF16, (int64_t)S * D, 0));
  std::vector<int32_t> ph(S);
  for (int i = 0; i < S; i++) ph[i] = i;
  CK(cudaMemcpy(pos, ph.data(), sizeof(int32_t) * S, cudaMemcpyHostToDevice));
  std::vector<double> fh(d / 2);
  for (int i = 0; i < d / 2; i++) fh[i] = pow(500000.0, -2.0 * i / d);
  CK(cudaMemcpy(inv_freq, fh.data(), sizeof(double) * d / 2, cudaMemcpyHostToDevice));
  const float t_pre = median_ms(5, [&] {
    for (int h = 0; h < Hkv; h++) {
      CK(ConvertRows(kb + (size_t)h * S * d, SKV_BF16, d, Kf + h * d, SKV_F32, D, S, d, 0));
      CK(Rope(Kf + h * d, S, d, D, pos, inv_freq, SKV_ROPE_HALF, -1, 0));
    }
  });
  const float t_conv = median_ms(5, [&] { CK(Convert(U, SKV_F32, ub, SKV_BF16, (int64_t)S * rank, 0)); });
  const float t_lm = median_ms(5, [&] {
    for (int h = 0; h < Hkv; h++) CK(Landmarks(kb + (size_t)h * S * d, SKV_BF16, d, chunks, C, d, lm, mc, 0));
  });
  const float t_sel = median_ms(5, [&] {
    for (int h = 0; h < Hkv; h++) CK(SelectChunks(mc, chunks, outliers, 0, 1, sel, cnt, 0));
  });
  // compress.ts: one copy per host page run (256 chunks x 8 tokens x d), per head.
  const float t_val = median_ms(3, [&] {
    for (int64_t off = 0; off < (int64_t)S * D; off += page)
      CK(cudaMemcpyAsync(static_cast<uint16_t*>(host) + off, vb + off, sizeof(uint16_t) * page, cudaMemcpyDefault, 0));
  });
  printf("  pre-RoPE keys (ConvertRows + inverse Rope, x%d heads) %.3f ms\n", Hkv, t_pre);
  printf("  U f32 -> bf16 (%d x %d) %.3f ms\n", S, rank, t_conv);
  printf("  Landmarks x%d heads %.3f ms; SelectChunks (%d of %d) x%d heads %.3f ms (device time; each also syncs to the host)\n",
         Hkv, t_lm, outliers, chunks, Hkv, t_sel);
  printf("  values to pinned host pages: %.1f MB in %lld copies %.3f ms (%.1f GB/s)\n", 2.0 * S * D / 1e6,
         (long long)((int64_t)S * D / page), t_val, 2.0 * S * D / t_val / 1e6);
  for (void* p : {(void*)kb, (void*)vb, (void*)ub, (void*)U, (void*)lm, (void*)mc, (void*)pos, (void*)sel, (void*)cnt, (void*)inv_freq})
    CK(cudaFree(p));
  CK(cudaFreeHost(host));
}

int main(int argc, char** argv) {
  const int S = argc > 1 ? atoi(argv[1]) : 131072, Hkv = 8, d = 128, D = Hkv * d, rank = 160;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("%s, %d SMs, CUDA %d.%d\n", prop.name, prop.multiProcessorCount, CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
  odd_shapes();
  float *K, *G, *U;
  void* ws;
  const size_t wb = GramWorkspace(S, D);
  CK(cudaMalloc(&K, sizeof(float) * S * D));
  CK(cudaMalloc(&G, sizeof(float) * D * D));
  CK(cudaMalloc(&U, sizeof(float) * S * rank));
  CK(cudaMalloc(&ws, wb));
  gram_at_scale(S, D, K, G, SkvWorkspace{ws, wb});
  u_at_scale(S, D, rank, K, U);
  printf("triangular solves of CholeskyQR (products_f64::LowerSolve)\n");
  solve_check(176, D);
  solve_check(1000, 2048);
  eigenvectors_check(176);
  eigenvectors_check(37);
  low_rank_at_scale(S, D, rank, K);
  other_steps(S, Hkv, d, rank, K);
  printf("%s (%d failed checks)\n", failures ? "FAILED" : "OK", failures);
  return failures ? 1 : 0;
}
