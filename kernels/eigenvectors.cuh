// The O(n^3) half of runtime/wasm/symmetric_eigen.h on the GPU, for LowRankKeys' Rayleigh-Ritz
// (n = rank + oversample = 176): Q^T from the Householder rows (householder_q) and the QL
// rotations applied to it (rotate_rows), ~4 ms of the host's ~7 on one thread (the H200 machine's Xeon).
// The host keeps the tridiagonal reduction (2-2.4 ms there) and the QL iteration itself (~1 ms of
// serial dependent steps).
// Every product and sum is rounded on its own in the host's order (no fused multiply-adds: the
// host builds have none), so the eigenvectors have the host's bits.
#pragma once
#include "common.cuh"
#include "mma.cuh"

namespace eigenvectors {
namespace {  // each including file its own kernels

enum { COLS = 32 };  // rows of Qt (householder_q) or columns of Vt (rotations) per block: one a thread

// symmetric_eigen.h's eigen_dot: four interleaved partial sums, added pairwise.
__device__ inline double dot_host_order(const double* a, const double* b, int stride_b, int n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 = __dadd_rn(s0, __dmul_rn(a[i], b[i * stride_b]));
    s1 = __dadd_rn(s1, __dmul_rn(a[i + 1], b[(i + 1) * stride_b]));
    s2 = __dadd_rn(s2, __dmul_rn(a[i + 2], b[(i + 2) * stride_b]));
    s3 = __dadd_rn(s3, __dmul_rn(a[i + 3], b[(i + 3) * stride_b]));
  }
  for (; i < n; i++) s0 = __dadd_rn(s0, __dmul_rn(a[i], b[i * stride_b]));
  return __dadd_rn(__dadd_rn(s0, s1), __dadd_rn(s2, s3));
}

// Block b, thread t: row j = b * COLS + t of Qt (householder_q), built in shared memory q[i][t]
// (component-major: a warp's threads read and write neighbouring words). A: the reduction's rows,
// each copied to shared memory (cp.async) while the threads use the row before it: a row read
// when its step began made each of the ~n steps wait for it.
__global__ void __launch_bounds__(COLS) HouseholderQKernel(const double* A, int n, double* Qt) {
  extern __shared__ double q[];  // [n][COLS], then two rows of A [2][n]
  double* rows = q + n * COLS;
  const int t = threadIdx.x, j = blockIdx.x * COLS + t;
  for (int i = 0; i < n; i++) q[i * COLS + t] = i == j ? 1.0 : 0.0;
  const int kmax = min(blockIdx.x * COLS + COLS - 2, n - 3);  // the block's largest j - 1
  auto fetch = [&](int k) {  // row k of A into rows[k % 2]
    for (int i = t; i < n; i += COLS) skv_mma::cp_async8(rows + (k & 1) * n + i, A + (size_t)k * n + i);
    skv_mma::cp_async_commit();
  };
  if (kmax >= 0) fetch(kmax);
  for (int k = kmax; k >= 0; k--) {
    skv_mma::cp_async_wait<0>();
    __syncwarp();  // row k is in for every lane, and every lane is done with row k + 1's buffer
    if (k > 0) fetch(k - 1);
    const double* v = rows + (k & 1) * n;
    const double h = v[k];
    if (h == 0 || k > j - 1) continue;  // H_k leaves e_j alone for j <= k
    const double s = __ddiv_rn(dot_host_order(v + k + 1, q + (k + 1) * COLS + t, COLS, n - k - 1), h);
    for (int i = k + 1; i < n; i++) q[i * COLS + t] = __dsub_rn(q[i * COLS + t], __dmul_rn(s, v[i]));
  }
  if (j < n)
    for (int i = 0; i < n; i++) Qt[(size_t)j * n + i] = q[i * COLS + t];
}

// Block b, thread t: column k = b * COLS + t of Vt [n x n] through `count` logged rotations
// (i, c, s) in order (rotate_rows), the column in shared memory v[r][t].
// NOTE: one warp a block, and the rotations of a column are one dependent chain, so whatever sits
// between one rotation's results and the next one's arithmetic adds up 30K times at l = 176. The
// log comes 32 rotations at a time into the lanes' registers; each rotation's inputs are fetched
// ahead of the arithmetic before it (its row index by a shuffle two rotations ahead, its (c, s)
// and its two rows one ahead; the rows read before the stores of the rotation between, whose
// results are taken from registers instead where its rows are the same), so the chain holds the
// arithmetic alone. Written plainly ~150 cycles a rotation (2.3 ms for l = 176's 30K); with the
// shuffles and loads inside the chain 115 (1.72 ms); here 103 (1.55 ms, H200): two dependent float64
// operations and a select are most of a rotation.
__global__ void __launch_bounds__(COLS) RotateKernel(double* Vt, int n, const double* log, int count) {
  extern __shared__ double v[];  // [n][COLS]
  const int t = threadIdx.x, k = blockIdx.x * COLS + t;
  for (int r = 0; r < n; r++) v[r * COLS + t] = k < n ? Vt[(size_t)r * n + k] : 0.0;
  int p = -2;             // the previous rotation's row i ...
  double pa = 0, pb = 0;  // ... and its new rows i and i + 1
  for (int g0 = 0; g0 < count; g0 += COLS) {
    const int m = min(COLS, count - g0);
    int li = 0;
    double lc = 0, ls = 0;
    if (t < m) li = (int)log[3 * (g0 + t)], lc = log[3 * (g0 + t) + 1], ls = log[3 * (g0 + t) + 2];
    // Rotation u's row i, (c, s) and rows as read; the row index of rotation u + 1.
    int i = __shfl_sync(0xffffffffu, li, 0), i1 = __shfl_sync(0xffffffffu, li, m > 1 ? 1 : 0);
    double c = __shfl_sync(0xffffffffu, lc, 0), s = __shfl_sync(0xffffffffu, ls, 0);
    double xm = v[i * COLS + t], ym = v[(i + 1) * COLS + t];
#pragma unroll
    for (int u = 0; u < COLS; u++) {
      if (u >= m) break;
      // Rotation u + 1's inputs, then rotation u + 2's row index: nothing here waits for u.
      const int i2 = __shfl_sync(0xffffffffu, li, u + 2 < m ? u + 2 : 0);
      const double c1 = __shfl_sync(0xffffffffu, lc, u + 1 < m ? u + 1 : 0), s1 = __shfl_sync(0xffffffffu, ls, u + 1 < m ? u + 1 : 0);
      const double xm1 = v[i1 * COLS + t], ym1 = v[(i1 + 1) * COLS + t];
      const double x = i == p ? pa : i == p + 1 ? pb : xm;
      const double y = i + 1 == p ? pa : i + 1 == p + 1 ? pb : ym;
      const double a = __dsub_rn(__dmul_rn(c, x), __dmul_rn(s, y));  // row i
      const double b = __dadd_rn(__dmul_rn(s, x), __dmul_rn(c, y));  // row i + 1
      v[i * COLS + t] = a;
      v[(i + 1) * COLS + t] = b;
      p = i, pa = a, pb = b;
      i = i1, i1 = i2, c = c1, s = s1, xm = xm1, ym = ym1;
    }
  }
  if (k < n)
    for (int r = 0; r < n; r++) Vt[(size_t)r * n + k] = v[r * COLS + t];
}

// E [m x n]: row i = row ord[i] of Vt (the kept eigenvectors, in ritz_pairs' order).
__global__ void GatherRowsKernel(const double* Vt, int n, const int* ord, int m, double* E) {
  for (int x = blockIdx.x * blockDim.x + threadIdx.x; x < m * n; x += gridDim.x * blockDim.x) E[x] = Vt[(size_t)ord[x / n] * n + x % n];
}

// Shared memory of the two kernels at width n: a block's COLS columns of n, and for Q two rows of A.
inline size_t q_smem(int n) { return sizeof(double) * n * (COLS + 2); }
inline size_t rotate_smem(int n) { return sizeof(double) * n * COLS; }

// Whether a block of this device holds both kernels' shared memory at width n (on an H200 up to
// n = 854; on an A100 613). Past it LowRankKeys forms the eigenvectors on the host, with the same bits.
inline bool fits(int n) {
  SkvSmemFit fit{};
  return skv_smem_fit(HouseholderQKernel, q_smem(n), "householder_q", &fit) == cudaSuccess &&
         skv_smem_fit(RotateKernel, rotate_smem(n), "rotate_rows", &fit) == cudaSuccess && !fit.kernel;
}

inline cudaError_t householder_q(const double* A, int n, double* Qt, cudaStream_t stream) {
  const size_t smem = q_smem(n);
  SKV_CUDA_CALL(skv_smem_optin(HouseholderQKernel, smem));
  HouseholderQKernel<<<(unsigned)skv_ceil_div(n, COLS), COLS, smem, stream>>>(A, n, Qt);
  return cudaGetLastError();
}

inline cudaError_t rotate_rows(double* Vt, int n, const double* log, int count, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  const size_t smem = rotate_smem(n);
  SKV_CUDA_CALL(skv_smem_optin(RotateKernel, smem));
  RotateKernel<<<(unsigned)skv_ceil_div(n, COLS), COLS, smem, stream>>>(Vt, n, log, count);
  return cudaGetLastError();
}

inline cudaError_t gather_rows(const double* Vt, int n, const int* ord, int m, double* E, cudaStream_t stream) {
  GatherRowsKernel<<<(unsigned)std::min<int64_t>(skv_ceil_div((int64_t)m * n, 256), 256), 256, 0, stream>>>(Vt, n, ord, m, E);
  return cudaGetLastError();
}

}  // namespace
}  // namespace eigenvectors
