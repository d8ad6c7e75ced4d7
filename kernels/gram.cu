// The Gram matrix G = K^T K of f32 keys K [S x D], the largest product of prefill (S D^2 multiply-
// adds: 137 G at 128K tokens x 1024), on the tensor cores in split bf16 (mma.cuh); below 2^30
// multiply-adds, Gemm's f32 SIMT kernel (the reference, as before). Only the upper block triangle
// of 128 x 128 tiles is computed, as runtime/wasm/low_rank_keys.cc does; S is cut into slices so
// that tiles x slices fill the GPU a few waves deep, each block writes its partial tile to the
// workspace, and a second kernel sums the slices in order (deterministic, no atomics) and mirrors
// (G exactly symmetric). Blocks run slice-major, so all the tiles of one slice read the same rows
// of K at about the same time: K streams from DRAM about once.
#include "common.cuh"
#include "mma.cuh"

namespace {

using namespace skv_mma;

// Blocks per SM times SMs, times this many waves: enough slices to keep every SM busy to the end.
enum { GRAM_WAVES = 3, GRAM_MIN_ROWS = 256 };

struct GramPlan {
  int T;       // tiles per side
  int tiles;   // upper-triangle tiles, T (T + 1) / 2
  int slices;  // of S, each `rows` long (a multiple of BK), the last shorter
  int rows;
};

cudaError_t plan_gram(int S, int D, GramPlan* plan) {
  int sms = 0;
  SKV_CUDA_CALL(skv_sm_count(&sms));
  const int T = (int)skv_ceil_div(D, BM), tiles = T * (T + 1) / 2;
  int slices = (int)std::max<int64_t>(1, std::min<int64_t>((int64_t)GRAM_WAVES * sms / tiles, skv_ceil_div(S, GRAM_MIN_ROWS)));
  const int rows = (int)(skv_ceil_div(skv_ceil_div(S, slices), BK) * BK);
  slices = (int)skv_ceil_div(S, rows);  // NOTE: rounding rows up can leave fewer, never empty, slices
  *plan = GramPlan{T, tiles, slices, rows};
  return cudaSuccess;
}

// Block (x, y): upper-triangle tile x (row-major order) over slice y of S; part [slices][tiles][ACC][THREADS].
__global__ void __launch_bounds__(THREADS, 1) GramKernel(const float* K, int S, int D, int64_t ldk, bool vec, int T,
                                                         int rows, float* part) {
  extern __shared__ __align__(16) uint16_t smem[];
  int t = blockIdx.x, bi = 0;
  for (; t >= T - bi; bi++) t -= T - bi;
  const int bj = bi + t;
  const int k0 = blockIdx.y * rows, k1 = min(S, k0 + rows);
  const TileArgs g{K, ldk, nullptr, vec, K, ldk, vec, D, D};
  float out[ACC];
  split_tile<true>(g, bi * BM, bj * BN, k0, k1, smem, out);
  float* dst = part + ((size_t)blockIdx.y * gridDim.x + blockIdx.x) * ACC * THREADS + threadIdx.x;
#pragma unroll
  for (int e = 0; e < ACC; e++) dst[(size_t)e * THREADS] = out[e];
}

// Block (x, e), thread tid: value e of thread tid of tile x, summed over the slices in order.
__global__ void __launch_bounds__(THREADS) GramReduceKernel(const float* part, int slices, int tiles, int T, int D,
                                                            float* G) {
  int t = blockIdx.x, bi = 0;
  for (; t >= T - bi; bi++) t -= T - bi;
  const int bj = bi + t, e = blockIdx.y;
  const int r = tile_row(e), c = tile_col(e);
  const int i = bi * BM + r, j = bj * BN + c;
  if (i >= D || j >= D || (bi == bj && r > c)) return;  // the diagonal tiles' lower halves come from the mirror
  const size_t stride = (size_t)tiles * ACC * THREADS;
  const float* p = part + ((size_t)blockIdx.x * ACC + e) * THREADS + threadIdx.x;
  float s = 0.f;
  for (int y = 0; y < slices; y++) s += p[y * stride];
  G[(size_t)i * D + j] = s;
  G[(size_t)j * D + i] = s;
}

size_t split_gram_bytes(const GramPlan& plan) { return sizeof(float) * (size_t)plan.slices * plan.tiles * ACC * THREADS; }

cudaError_t split_gram(const float* K, int S, int D, int64_t ldk, float* G, SkvWorkspace ws, cudaStream_t stream) {
  GramPlan plan;
  SKV_CUDA_CALL(plan_gram(S, D, &plan));
  if (ws.bytes < split_gram_bytes(plan)) return cudaErrorInvalidValue;
  if (plan.tiles > SKV_MAX_BLOCKS) return cudaErrorInvalidConfiguration;  // D > 45K: not a key width
  const size_t smem = TileSmem<true>::bytes();
  SKV_CUDA_CALL(skv_smem_optin(GramKernel, smem));
  float* part = static_cast<float*>(ws.ptr);
  GramKernel<<<dim3(plan.tiles, plan.slices), THREADS, smem, stream>>>(K, S, D, ldk, vec4_ok(K, ldk), plan.T, plan.rows, part);
  SKV_LAUNCH_CHECK();
  GramReduceKernel<<<dim3(plan.tiles, ACC), THREADS, 0, stream>>>(part, plan.slices, plan.tiles, plan.T, D, G);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}

bool small_gram(int S, int D) { return (int64_t)S * D * D < SPLIT_MIN_MACS; }

}  // namespace

size_t GramWorkspace(int S, int D) {
  GramPlan plan;
  if (S <= 0 || D <= 0 || small_gram(S, D) || plan_gram(S, D, &plan) != cudaSuccess) return 0;
  return split_gram_bytes(plan);
}

cudaError_t Gram(const float* K, int S, int D, int64_t ldk, float* G, SkvWorkspace ws, cudaStream_t stream) {
  if (D <= 0) return cudaSuccess;
  if (S <= 0) return cudaMemsetAsync(G, 0, sizeof(float) * (size_t)D * D, stream);
  // NOTE: small Grams (every one the test suites make) stay f32 SIMT: the reference semantics.
  if (small_gram(S, D)) return Gemm(D, D, S, 1.f, K, SKV_F32, ldk, 1, nullptr, K, SKV_F32, ldk, 0, 0.f, G, D, stream);
  return split_gram(K, S, D, ldk, G, ws, stream);
}
