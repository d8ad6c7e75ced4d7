// f32 GEMM over stored f32/f16/bf16 operands: 64 x 64 tiles of C per block, 16-deep slabs of
// op(A) and op(B) staged in shared memory as f32 (conversion, transposes and the a_rows gather
// all happen in the staging loads), a 4 x 4 register tile per thread. It is the reference, and
// runs every product but the large ones: f32 products of at least SPLIT_MIN_MACS (2^30) multiply-
// adds with op(B) = B (U = K proj at prefill) go to the tensor cores in split bf16 (mma.cuh), good
// to ~2^-16 relative per product instead of 2^-24. Mirrors runtime/wasm/gemm.cc (skv_gemm).
#include "common.cuh"
#include "dtype.cuh"
#include "mma.cuh"

namespace {

enum { TILE_M = 64, TILE_N = 64, TILE_K = 16, GEMM_THREADS = 256 };

struct GemmParams {
  int M, N, K;
  float alpha, beta;
  const void* A; int a_dtype; int64_t lda; int transA; const int32_t* a_rows;
  const void* B; int b_dtype; int64_t ldb; int transB;
  float* C; int64_t ldc;
};

// op(A)(i, k) and op(B)(k, j) as f32.
__device__ __forceinline__ float op_a(const GemmParams& p, int i, int k) {
  if (p.transA) return load_f32(p.A, p.a_dtype, (size_t)((int64_t)k * p.lda + i));
  int64_t row = p.a_rows ? (int64_t)p.a_rows[i] : (int64_t)i;
  return load_f32(p.A, p.a_dtype, (size_t)(row * p.lda + k));
}

__device__ __forceinline__ float op_b(const GemmParams& p, int k, int j) {
  if (p.transB) return load_f32(p.B, p.b_dtype, (size_t)((int64_t)j * p.ldb + k));
  return load_f32(p.B, p.b_dtype, (size_t)((int64_t)k * p.ldb + j));
}

// Block (x, y) takes the row tiles y, y + gridDim.y, ...: a grid's y holds at most SKV_MAX_BLOCKS,
// and U = K proj has a row per token (past 4M tokens in one row, more tiles than that).
__global__ void __launch_bounds__(GEMM_THREADS) GemmKernel(GemmParams p) {
  __shared__ float As[TILE_K][TILE_M + 4];  // op(A) slab, k-major (padded: fewer bank conflicts)
  __shared__ float Bs[TILE_K][TILE_N + 4];  // op(B) slab
  for (int64_t ry = blockIdx.y; ry * TILE_M < p.M; ry += gridDim.y) {
    const int row0 = (int)(ry * TILE_M), col0 = blockIdx.x * TILE_N;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // this thread's 4 x 4 tile
    float acc[4][4] = {};
    for (int k0 = 0; k0 < p.K; k0 += TILE_K) {
      // 1. Stage the slabs; the fast thread index runs along the stored rows (coalesced reads).
      for (int l = threadIdx.x; l < TILE_M * TILE_K; l += GEMM_THREADS) {
        int i = p.transA ? l % TILE_M : l / TILE_K, kk = p.transA ? l / TILE_M : l % TILE_K;
        int gi = row0 + i, gk = k0 + kk;
        As[kk][i] = gi < p.M && gk < p.K ? op_a(p, gi, gk) : 0.f;
      }
      for (int l = threadIdx.x; l < TILE_K * TILE_N; l += GEMM_THREADS) {
        int j = p.transB ? l / TILE_K : l % TILE_N, kk = p.transB ? l % TILE_K : l / TILE_N;
        int gj = col0 + j, gk = k0 + kk;
        Bs[kk][j] = gj < p.N && gk < p.K ? op_b(p, gk, gj) : 0.f;
      }
      __syncthreads();
      // 2. The register tile.
#pragma unroll
      for (int kk = 0; kk < TILE_K; kk++) {
        float a[4], b[4];
#pragma unroll
        for (int r = 0; r < 4; r++) a[r] = As[kk][ty * 4 + r];
#pragma unroll
        for (int c = 0; c < 4; c++) b[c] = Bs[kk][tx * 4 + c];
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
          for (int c = 0; c < 4; c++) acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
      }
      __syncthreads();
    }
    // 3. C = alpha * acc + beta * C; NOTE: beta = 0 never reads C (it may hold garbage or NaN).
    for (int r = 0; r < 4; r++) {
      int i = row0 + ty * 4 + r;
      if (i >= p.M) continue;
      for (int c = 0; c < 4; c++) {
        int j = col0 + tx * 4 + c;
        if (j >= p.N) continue;
        float* cij = p.C + (size_t)((int64_t)i * p.ldc + j);
        *cij = p.alpha * acc[r][c] + (p.beta != 0.f ? p.beta * *cij : 0.f);
      }
    }
  }
}

// The tensor-core path: one 128 x 128 tile of C at a time per block over the whole K (mma.cuh),
// the row tiles strided by the grid's y as GemmKernel's.
template <bool A_KMAJOR>
__global__ void __launch_bounds__(skv_mma::THREADS, 1) SplitGemmKernel(GemmParams p, skv_mma::TileArgs t) {
  using namespace skv_mma;
  extern __shared__ __align__(16) uint16_t smem[];
  for (int64_t ry = blockIdx.y; ry * BM < p.M; ry += gridDim.y) {
    const int m0 = (int)(ry * BM), n0 = blockIdx.x * BN;
    float out[ACC];
    __syncthreads();  // the previous tile's last reads of smem are done
    split_tile<A_KMAJOR>(t, m0, n0, 0, p.K, smem, out);
#pragma unroll
    for (int e = 0; e < ACC; e++) {
      const int i = m0 + tile_row(e), j = n0 + tile_col(e);
      if (i >= p.M || j >= p.N) continue;
      float* cij = p.C + (size_t)((int64_t)i * p.ldc + j);
      *cij = p.alpha * out[e] + (p.beta != 0.f ? p.beta * *cij : 0.f);
    }
  }
}

template <bool A_KMAJOR>
cudaError_t split_gemm(const GemmParams& p, cudaStream_t stream) {
  using namespace skv_mma;
  const size_t smem = TileSmem<A_KMAJOR>::bytes();
  SKV_CUDA_CALL(skv_smem_optin(SplitGemmKernel<A_KMAJOR>, smem));
  const float* a = static_cast<const float*>(p.A);
  const float* b = static_cast<const float*>(p.B);
  TileArgs t{a, p.lda, p.a_rows, vec4_ok(a, p.lda), b, p.ldb, vec4_ok(b, p.ldb), p.M, p.N};
  dim3 grid((unsigned)skv_ceil_div(p.N, BN), (unsigned)std::min<int64_t>(skv_ceil_div(p.M, BM), SKV_MAX_BLOCKS));  // N fastest: row blocks share A in L2
  SplitGemmKernel<A_KMAJOR><<<grid, THREADS, smem, stream>>>(p, t);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}

}  // namespace

cudaError_t Gemm(int M, int N, int K, float alpha, const void* A, int a_dtype, int64_t lda, int transA,
                 const int32_t* a_rows, const void* B, int b_dtype, int64_t ldb, int transB, float beta, float* C,
                 int64_t ldc, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return cudaSuccess;
  // NOTE: a_rows gathers stored rows, which is op(A)'s rows only when A is not transposed.
  GemmParams p{M, N, K < 0 ? 0 : K, alpha, beta, A, a_dtype, lda, transA, transA ? nullptr : a_rows, B, b_dtype, ldb, transB, C, ldc};
  if (a_dtype == SKV_F32 && b_dtype == SKV_F32 && !transB && (int64_t)M * N * p.K >= skv_mma::SPLIT_MIN_MACS)
    return transA ? split_gemm<true>(p, stream) : split_gemm<false>(p, stream);
  dim3 grid((unsigned)skv_ceil_div(N, TILE_N), (unsigned)std::min<int64_t>(skv_ceil_div(M, TILE_M), SKV_MAX_BLOCKS));
  GemmKernel<<<grid, GEMM_THREADS, 0, stream>>>(p);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
