// Float64 products of the subspace iteration in LowRankKeys (l x l and l x D, l ~ 176, D ~ 1024:
// tens of microseconds on the GPU against tens of milliseconds on the host): the Gram matrices of
// the Cholesky-QR passes and their triangular solves, the Rayleigh matrix and the Ritz vectors.
// Operands are f32 or f64 and are widened to f64; every output sums its terms in ascending k with
// fma, so the result does not depend on the tiling.
#pragma once
#include "common.cuh"

namespace products_f64 {

enum { TILE = 16, SOLVE_WARPS = 8 };

// C [m x n] (f64, row stride ldc) = A [m x k] (row stride lda) times B, B(kk, j) = B[kk * bk + j * bj];
// Cf, when not null, the same rounded to f32 (row stride ldc). bk == 1 is B^T of rows (a dot product
// of rows per entry), otherwise (bj == 1 in use) B is rows of n: each case is staged with loads along rows.
template <class TA, class TB>
__global__ void __launch_bounds__(TILE * TILE) ProductKernel(int m, int n, int k, const TA* A, int64_t lda, const TB* B,
                                                            int64_t bk, int64_t bj, double* C, float* Cf, int64_t ldc) {
  __shared__ double As[TILE][TILE + 1], Bs[TILE][TILE + 1];  // As[i][kk], Bs[kk][j] (padded: no bank conflicts)
  const int tx = threadIdx.x % TILE, ty = threadIdx.x / TILE;
  const int i0 = blockIdx.y * TILE, j0 = blockIdx.x * TILE;
  double s = 0;
  for (int k0 = 0; k0 < k; k0 += TILE) {
    const int ai = i0 + ty, ak = k0 + tx;
    As[ty][tx] = ai < m && ak < k ? (double)A[ai * lda + ak] : 0.0;
    if (bk == 1) {  // consecutive threads read consecutive kk of one B row
      const int bj_ = j0 + ty, bk_ = k0 + tx;
      Bs[tx][ty] = bj_ < n && bk_ < k ? (double)B[bk_ + bj_ * bj] : 0.0;
    } else {  // consecutive threads read consecutive j of one B row
      const int bk_ = k0 + ty, bj_ = j0 + tx;
      Bs[ty][tx] = bj_ < n && bk_ < k ? (double)B[bk_ * bk + bj_ * bj] : 0.0;
    }
    __syncthreads();
    for (int kk = 0; kk < TILE; kk++) s = fma(As[ty][kk], Bs[kk][tx], s);
    __syncthreads();
  }
  const int i = i0 + ty, j = j0 + tx;
  if (i < m && j < n) {
    C[i * ldc + j] = s;
    if (Cf) Cf[i * ldc + j] = (float)s;
  }
}

// NOTE: the zero padding of partial tiles adds exact zeros (fma(0, 0, s) == s), so edges sum like the rest.
template <class TA, class TB>
cudaError_t Product(int m, int n, int k, const TA* A, int64_t lda, const TB* B, int64_t bk, int64_t bj, double* C,
                    float* Cf, int64_t ldc, cudaStream_t stream) {
  const dim3 grid((unsigned)skv_ceil_div(n, TILE), (unsigned)skv_ceil_div(m, TILE));
  ProductKernel<TA, TB><<<grid, TILE * TILE, 0, stream>>>(m, n, k, A, lda, B, bk, bj, C, Cf, ldc);
  return cudaGetLastError();
}

// C [m x n] = A [m x k] B [n x k]^T: every dot product of a row of A with a row of B (row strides k).
template <class TA, class TB>
cudaError_t RowDots(int m, int n, int k, const TA* A, const TB* B, double* C, cudaStream_t stream) {
  return Product(m, n, k, A, k, B, 1, k, C, (float*)nullptr, n, stream);
}

// C [m x n] (and Cf, if not null) = M [m x k] B [k x n]: rows of B combined (row strides k for M, n for B and C).
template <class TB>
cudaError_t CombineRows(int m, int n, int k, const double* M, const TB* B, double* C, float* Cf, cudaStream_t stream) {
  return Product(m, n, k, M, k, B, n, 1, C, Cf, n, stream);
}

// B [l x n] (f64; Bf, if not null, the same in f32) = L^{-1} A for L [l x l] lower triangular (f64,
// row stride l) and A [l x n]: forward substitution, one warp per column. The column lives in shared
// memory (A's entries, each replaced by B's once solved); for row i, lane t sums L[i][j] B[j] over
// j = t, t + 32, ... < i in ascending j, a fixed butterfly adds the 32 sums, and every lane then holds
// the same B[i]. The sums do not depend on n or on the block, so a column's result never changes.
// NOTE: a thread per column (the first version) made each column a serial chain of l^2 / 2 dependent
// loads: ~0.77 ms for 176 x 1024 on an H200. Here a row costs ~l / 32 fma a lane and 5 shuffles.
template <class TA>
__global__ void __launch_bounds__(SOLVE_WARPS * 32) LowerSolveKernel(int l, int n, const double* L, const TA* A, double* B, float* Bf) {
  extern __shared__ double col_shared[];  // [warps][l]
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  const int x = blockIdx.x * (blockDim.x / 32) + w;
  if (x >= n) return;  // whole warps leave: no block-wide barrier below
  double* col = col_shared + (size_t)w * l;
  for (int i = lane; i < l; i += 32) col[i] = (double)A[(size_t)i * n + x];
  __syncwarp();
  for (int i = 0; i < l; i++) {
    const double* Li = L + (size_t)i * l;  // lanes read consecutive entries: one coalesced row segment
    double s = 0;
    for (int j = lane; j < i; j += 32) s = fma(Li[j], col[j], s);
    for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
    const double b = (col[i] - s) / Li[i];
    __syncwarp();  // every lane read col[i] before it is replaced
    if (lane == 0) col[i] = b;
    __syncwarp();
  }
  for (int i = lane; i < l; i += 32) {
    B[(size_t)i * n + x] = col[i];
    if (Bf) Bf[(size_t)i * n + x] = (float)col[i];
  }
}

// NOTE: l doubles of shared memory a warp: up to 8 warps within the default 48 KB (l = 176: 8 warps,
// 11 KB; n = 1024 gives 128 blocks); wider l gets fewer warps, past 6144 one warp and the opt-in limit.
template <class TA>
cudaError_t LowerSolve(int l, int n, const double* L, const TA* A, double* B, float* Bf, cudaStream_t stream) {
  const size_t per_warp = sizeof(double) * (size_t)l, default_shared = 48 << 10;
  const int warps = (int)std::max<size_t>(1, std::min<size_t>(SOLVE_WARPS, default_shared / per_warp));
  const size_t shared = per_warp * warps;
  SKV_CUDA_CALL(skv_smem_optin(LowerSolveKernel<TA>, shared));
  LowerSolveKernel<TA><<<(unsigned)skv_ceil_div(n, warps), warps * 32, shared, stream>>>(l, n, L, A, B, Bf);
  return cudaGetLastError();
}

}  // namespace products_f64
