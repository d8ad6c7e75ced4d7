// Prefill attention of one kv group: query row i of each head sees keys [0, offset + i]. A block
// takes R query rows of all g heads (R*g query vectors, as the wasm op's passes), so each key
// tile is staged once for all of them. Mirrors runtime/wasm/causal_attention.cc.
#include "online_softmax.cuh"

enum { CAUSAL_QUERIES = 16 };  // query vectors (rows x heads) per block

__global__ void __launch_bounds__(ATTN_THREADS) CausalAttentionKernel(const float* q, int g, int Sq, int d, float scale,
                                                                      int offset, const void* k, const void* v,
                                                                      int kv_dtype, int R, float* out) {
  extern __shared__ float smem[];
  const int i0 = blockIdx.x * R;
  const int rr = min(R, Sq - i0);
  AttnState s = attn_state(smem, rr * g, d);  // query vector r * g + j is head j, row i0 + r
  for (int i = threadIdx.x; i < rr * g * d; i += blockDim.x) {
    const int qv = i / d, e = i % d, r = qv / g, j = qv % g;
    s.q[i] = scale * q[((size_t)j * Sq + i0 + r) * d + e];
  }
  for (int qv = threadIdx.x; qv < rr * g; qv += blockDim.x) s.vis[qv] = offset + i0 + qv / g + 1;
  attn_reset(s);
  __syncthreads();
  const int64_t nkeys = (int64_t)offset + i0 + rr;  // keys the last row of the block sees
  const size_t esize = kv_dtype == SKV_F32 ? 4 : 2;
  for (int64_t t0 = 0; t0 < nkeys; t0 += ATTN_TILE) {
    const int n = (int)skv_min64(ATTN_TILE, nkeys - t0);
    for (int i = threadIdx.x; i < n * d; i += blockDim.x) {
      const int64_t row = t0 + i / d;
      attn_stage_row(s, i / d, static_cast<const char*>(k) + row * d * esize, static_cast<const char*>(v) + row * d * esize,
                     kv_dtype, i % d);
    }
    __syncthreads();
    attn_tile(s, n, t0);
  }
  // out_j = acc_j / l_j; a query that saw no key gets zeros.
  for (int i = threadIdx.x; i < rr * g * d; i += blockDim.x) {
    const int qv = i / d, e = i % d, r = qv / g, j = qv % g;
    const float inv = s.l[qv] > 0.f ? 1.f / s.l[qv] : 0.f;
    out[((size_t)j * Sq + i0 + r) * d + e] = s.acc[i] * inv;
  }
}

cudaError_t CausalAttention(const float* q, int g, int Sq, int d, float scale, int offset, const void* k,
                            const void* v, int kv_dtype, float* out, cudaStream_t stream) {
  if (g <= 0 || Sq <= 0 || d <= 0) return cudaSuccess;
  const int R = CAUSAL_QUERIES / g > 0 ? CAUSAL_QUERIES / g : 1;  // query rows per block
  const size_t smem = attn_smem_bytes(R * g, d);
  SKV_CUDA_CALL(skv_smem_optin(CausalAttentionKernel, smem));
  CausalAttentionKernel<<<(unsigned)skv_ceil_div(Sq, R), ATTN_THREADS, smem, stream>>>(q, g, Sq, d, scale, offset, k, v,
                                                                                      kv_dtype, R, out);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
