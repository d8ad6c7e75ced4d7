// The one attention routine of the kernels, after runtime/wasm/online_softmax.h: nq query vectors
// of one block keep a running max m, a running sum l of exp(logit - m) and an accumulator of
// p * v, folding in tiles of ATTN_TILE keys (logits of a whole tile first, then one rescale).
// Shared by sparse_attention.cu (decode, split over blocks of keys) and causal_attention.cu
// (prefill, query rows x heads per block). Everything lives in dynamic shared memory.
#pragma once
#include "common.cuh"
#include "dtype.cuh"

enum { ATTN_TILE = 32, ATTN_THREADS = 128 };

struct AttnState {
  float* q;    // [nq x d] queries, pre-multiplied by the scale
  float* acc;  // [nq x d] running sum of p * v
  float* k;    // [ATTN_TILE x d] a tile of keys in f32
  float* v;    // [ATTN_TILE x d] and of values
  float* p;    // [nq x ATTN_TILE] logits, then probabilities
  float* m;    // [nq] running max
  float* l;    // [nq] running sum
  float* f;    // [nq] this tile's rescale factor
  int* vis;    // [nq] keys each query may see, counted from key 0 (the causal mask)
  int nq, d;
};

// Dynamic shared memory of an AttnState.
static inline size_t attn_smem_bytes(int nq, int d) {
  return sizeof(float) * ((size_t)2 * nq * d + (size_t)2 * ATTN_TILE * d + (size_t)nq * ATTN_TILE + 3 * (size_t)nq) +
         sizeof(int) * (size_t)nq;
}

__device__ __forceinline__ AttnState attn_state(float* base, int nq, int d) {
  AttnState s;
  s.nq = nq;
  s.d = d;
  s.q = base;
  s.acc = s.q + nq * d;
  s.k = s.acc + nq * d;
  s.v = s.k + ATTN_TILE * d;
  s.p = s.v + ATTN_TILE * d;
  s.m = s.p + nq * ATTN_TILE;
  s.l = s.m + nq;
  s.f = s.l + nq;
  s.vis = reinterpret_cast<int*>(s.f + nq);
  return s;
}

// m = -inf, l = 0, acc = 0. The caller fills q and vis, then synchronizes.
__device__ __forceinline__ void attn_reset(const AttnState& s) {
  for (int j = threadIdx.x; j < s.nq; j += blockDim.x) {
    s.m[j] = -INFINITY;
    s.l[j] = 0.f;
  }
  for (int i = threadIdx.x; i < s.nq * s.d; i += blockDim.x) s.acc[i] = 0.f;
}

// Folds the n <= ATTN_TILE keys and values staged in s.k / s.v (key t is key t0 + t of the stream)
// into the state. Starts and ends with the block synchronized.
__device__ __forceinline__ void attn_tile(const AttnState& s, int n, int64_t t0) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int nq = s.nq, d = s.d;
  // 1. Logits of the whole tile: a warp per (query, key) pair, lanes along d.
  for (int w = warp; w < nq * n; w += warps) {
    const int j = w / n, t = w % n;
    float dot = 0.f;
    for (int e = lane; e < d; e += 32) dot += s.q[j * d + e] * s.k[t * d + e];
    dot = warp_sum(dot);
    if (lane == 0) s.p[j * ATTN_TILE + t] = t0 + t >= s.vis[j] ? -INFINITY : dot;
  }
  __syncthreads();
  // 2. New running max per query; rescale what was accumulated under the old one.
  for (int j = warp; j < nq; j += warps) {
    const float x = lane < n ? s.p[j * ATTN_TILE + lane] : -INFINITY;
    float mx = warp_max(x);
    const float m0 = s.m[j];
    mx = mx > m0 ? mx : m0;
    if (mx == -INFINITY) {  // nothing visible yet: nothing to add
      if (lane < n) s.p[j * ATTN_TILE + lane] = 0.f;
      if (lane == 0) s.f[j] = 1.f;
      continue;
    }
    const float e = lane < n ? skv_exp(x - mx) : 0.f;
    if (lane < n) s.p[j * ATTN_TILE + lane] = e;
    const float sum = warp_sum(e);
    if (lane == 0) {
      const float fj = mx > m0 ? skv_exp(m0 - mx) : 1.f;  // 0 when m was -inf
      s.f[j] = fj;
      s.l[j] = s.l[j] * fj + sum;
      s.m[j] = mx;
    }
  }
  __syncthreads();
  // 3. Values: acc = acc * f + sum_t p_t v_t (a zero p adds nothing, as in the wasm loop).
  for (int i = threadIdx.x; i < nq * d; i += blockDim.x) {
    const int j = i / d, e = i % d;
    float a = s.acc[i] * s.f[j];
    for (int t = 0; t < n; t++) {
      const float pv = s.p[j * ATTN_TILE + t];
      if (pv != 0.f) a += pv * s.v[t * d + e];
    }
    s.acc[i] = a;
  }
  __syncthreads();
}

// Stages key/value row t of a tile (f32 conversion) from row addresses.
__device__ __forceinline__ void attn_stage_row(const AttnState& s, int t, const void* krow, const void* vrow, int dtype, int e) {
  s.k[t * s.d + e] = load_f32(krow, dtype, (size_t)e);
  s.v[t * s.d + e] = load_f32(vrow, dtype, (size_t)e);
}
