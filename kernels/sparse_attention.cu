// Decode attention of one kv group: g query heads over the union of segments (outlier chunks,
// rebuilt chunks, the exact tail). The keys are split over blocks (flash-decoding): each block
// runs the online softmax over its range and leaves (m, l, acc); a second launch merges them per
// head. With one block the merge is exactly the wasm finish (acc / l). Mirrors
// runtime/wasm/sparse_attention.cc (skv_sparse_attention).
#include <limits.h>
#include "online_softmax.cuh"

enum { KEYS_PER_BLOCK = 256, MAX_SPLITS = 128 };

namespace {

int splits(int64_t total) { return (int)std::max<int64_t>(1, std::min<int64_t>(skv_ceil_div(total, KEYS_PER_BLOCK), MAX_SPLITS)); }

// Keys per block: a whole number of tiles.
int64_t per_block(int64_t total, int nb) { return skv_ceil_div(skv_ceil_div(total, nb), ATTN_TILE) * ATTN_TILE; }

}  // namespace

// Partials of block b: [g] m, [g] l, [g x d] acc, at part + b * g * (d + 2).
__global__ void __launch_bounds__(ATTN_THREADS) SparseAttentionKernel(const float* q, int g, int d, float scale,
                                                                      const SkvSegment* segs, int nseg, int64_t total,
                                                                      int64_t per, int kv_dtype, float* part) {
  extern __shared__ float smem[];
  __shared__ uint64_t krow[ATTN_TILE], vrow[ATTN_TILE];
  AttnState s = attn_state(smem, g, d);
  for (int i = threadIdx.x; i < g * d; i += blockDim.x) s.q[i] = scale * q[i];
  for (int j = threadIdx.x; j < g; j += blockDim.x) s.vis[j] = INT_MAX;  // no mask: every key is visible
  attn_reset(s);
  __syncthreads();
  const int64_t begin = (int64_t)blockIdx.x * per, end = skv_min64(total, begin + per);
  const size_t esize = kv_dtype == SKV_F32 ? 4 : 2;
  for (int64_t t0 = begin; t0 < end; t0 += ATTN_TILE) {
    const int n = (int)skv_min64(ATTN_TILE, end - t0);
    // 1. Row addresses of the tile's keys: key t0 + t is row (t0 + t - base) of its segment.
    if (threadIdx.x < n) {
      int64_t key = t0 + threadIdx.x, base = 0;
      int sg = 0;
      while (sg < nseg - 1 && key >= base + segs[sg].n) base += segs[sg++].n;
      const int64_t off = (key - base) * segs[sg].ld;
      krow[threadIdx.x] = segs[sg].k + off * esize;
      vrow[threadIdx.x] = segs[sg].v + off * esize;
    }
    __syncthreads();
    // 2. The tile in f32, then folded in.
    for (int i = threadIdx.x; i < n * d; i += blockDim.x) {
      const int t = i / d;
      attn_stage_row(s, t, reinterpret_cast<const void*>(krow[t]), reinterpret_cast<const void*>(vrow[t]), kv_dtype, i % d);
    }
    __syncthreads();
    attn_tile(s, n, 0);
  }
  float* mine = part + (size_t)blockIdx.x * g * (d + 2);
  for (int j = threadIdx.x; j < g; j += blockDim.x) {
    mine[j] = s.m[j];
    mine[g + j] = s.l[j];
  }
  for (int i = threadIdx.x; i < g * d; i += blockDim.x) mine[2 * g + i] = s.acc[i];
}

// Head j = blockIdx.x: out = sum_b acc_b e^(m_b - M) / sum_b l_b e^(m_b - M); zeros if no key.
__global__ void SparseAttentionMergeKernel(const float* part, int nb, int g, int d, float* out) {
  const int j = blockIdx.x;
  const size_t stride = (size_t)g * (d + 2);
  float M = -INFINITY;
  for (int b = 0; b < nb; b++) {
    const float m = part[b * stride + j];
    M = m > M ? m : M;
  }
  float L = 0.f;
  for (int b = 0; b < nb; b++) {
    const float m = part[b * stride + j];
    if (m != -INFINITY) L += part[b * stride + g + j] * skv_exp(m - M);
  }
  const float inv = L > 0.f ? 1.f / L : 0.f;
  for (int e = threadIdx.x; e < d; e += blockDim.x) {
    float a = 0.f;
    for (int b = 0; b < nb; b++) {
      const float m = part[b * stride + j];
      if (m != -INFINITY) a += part[b * stride + 2 * g + (size_t)j * d + e] * skv_exp(m - M);
    }
    out[(size_t)j * d + e] = a * inv;
  }
}

size_t SparseAttentionWorkspace(int g, int d, int64_t total) {
  return sizeof(float) * (size_t)splits(total) * (size_t)g * (size_t)(d + 2);
}

cudaError_t SparseAttention(const float* q, int g, int d, float scale, const SkvSegment* segs, int nseg,
                            int64_t total, int kv_dtype, float* out, SkvWorkspace ws, cudaStream_t stream) {
  if (g <= 0 || d <= 0) return cudaSuccess;
  if (total <= 0 || nseg <= 0) return cudaMemsetAsync(out, 0, sizeof(float) * (size_t)g * d, stream);  // no keys: zeros
  const int nb = splits(total);
  if (ws.bytes < SparseAttentionWorkspace(g, d, total)) return cudaErrorInvalidValue;
  const size_t smem = attn_smem_bytes(g, d);
  SKV_CUDA_CALL(skv_smem_optin(SparseAttentionKernel, smem));
  float* part = static_cast<float*>(ws.ptr);
  SparseAttentionKernel<<<nb, ATTN_THREADS, smem, stream>>>(q, g, d, scale, segs, nseg, total, per_block(total, nb), kv_dtype, part);
  SKV_LAUNCH_CHECK();
  SparseAttentionMergeKernel<<<g, 128, 0, stream>>>(part, nb, g, d, out);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
