// Decode attention: g query heads over the union of segments (outlier chunks, rebuilt chunks,
// the exact tail), as tasks (attention.h). The keys of a task are split over blocks
// (flash-decoding); each block leaves (m, l, acc) and a second launch merges them per head.
// Common shapes (d 64/128/256, g up to 8) take a register kernel: 16 lanes per key row, 16-byte
// loads, the online softmax in base 2; others take the shared-memory tile routine of
// online_softmax.cuh. Mirrors runtime/wasm/sparse_attention.cc (skv_sparse_attention).
#include "attention.h"
#include "online_softmax.cuh"

namespace {

constexpr float LOG2E = 1.4426950408889634f;
enum { FLASH_THREADS = 128, FLASH_LANES = 16, FLASH_GROUPS = FLASH_THREADS / FLASH_LANES };

__device__ __forceinline__ int attn_splits(int64_t total) {
  int64_t s = (total + ATTN_KEYS_PER_SPLIT - 1) / ATTN_KEYS_PER_SPLIT;
  return (int)(s < 1 ? 1 : s > ATTN_MAX_SPLITS ? ATTN_MAX_SPLITS : s);
}

// Keys per split: a whole number of ATTN_TILE rows.
__device__ __forceinline__ int64_t attn_per_split(int64_t total, int nb) {
  const int64_t keys = (total + nb - 1) / nb;
  return (keys + ATTN_TILE - 1) / ATTN_TILE * ATTN_TILE;
}

// Rows [begin, end) of a task: the segment holding `key` and the row within it.
__device__ __forceinline__ void locate(const SkvSegment* segs, int nseg, int64_t key, const char** k, const char** v,
                                       size_t esize) {
  int64_t base = 0;
  int s = 0;
  while (s < nseg - 1 && key >= base + segs[s].n) base += segs[s++].n;
  const int64_t off = (key - base) * segs[s].ld * (int64_t)esize;
  *k = reinterpret_cast<const char*>(segs[s].k) + off;
  *v = reinterpret_cast<const char*>(segs[s].v) + off;
}

// Keys [begin, end) of split blockIdx.y of task t; false when the block has none (a skipped task,
// no key, or a split past the task's count).
__device__ __forceinline__ bool split_range(const SkvAttnTask& t, int64_t* begin, int64_t* end) {
  if (!t.out || t.total <= 0) return false;
  const int nb = attn_splits(t.total);
  if ((int)blockIdx.y >= nb) return false;
  const int64_t per = attn_per_split(t.total, nb);
  *begin = (int64_t)blockIdx.y * per;
  *end = skv_min64(t.total, *begin + per);
  return true;
}

// DL consecutive elements of a row from element e0, as f32.
template <int DL>
__device__ __forceinline__ void load_slice(const char* row, int dtype, int e0, bool vec, float* x) {
  if (dtype == SKV_F32) {
    const float* r = reinterpret_cast<const float*>(row) + e0;
    if (vec && DL % 4 == 0) {
#pragma unroll
      for (int i = 0; i < DL; i += 4) {
        const float4 w = *reinterpret_cast<const float4*>(r + i);
        x[i] = w.x, x[i + 1] = w.y, x[i + 2] = w.z, x[i + 3] = w.w;
      }
    } else {
#pragma unroll
      for (int i = 0; i < DL; i++) x[i] = r[i];
    }
    return;
  }
  const uint16_t* r = reinterpret_cast<const uint16_t*>(row) + e0;
  if (vec && DL % 8 == 0) {
#pragma unroll
    for (int i = 0; i < DL; i += 8) unpack8_16bit(*reinterpret_cast<const uint4*>(r + i), dtype, x + i);
  } else if (dtype == SKV_BF16) {
#pragma unroll
    for (int i = 0; i < DL; i++) x[i] = bf16_to_f32(r[i]);
  } else {
#pragma unroll
    for (int i = 0; i < DL; i++) x[i] = f16_to_f32(r[i]);
  }
}

// Partials of split blockIdx.y of task blockIdx.x: [g] m, [g] l, [g x d] acc.
__device__ __forceinline__ float* partials(float* part, int max_splits, int g, int d) {
  return part + ((size_t)blockIdx.x * max_splits + blockIdx.y) * (size_t)g * (d + 2);
}

// The register kernel: lanes sub of group grp hold elements [sub*DL, +DL) of the query heads and of
// their accumulators; each group runs its own online softmax (base 2) over its keys (a warp's two groups take adjacent ones),
// and the groups merge in shared memory at the end.
template <int D, int G>
__global__ void __launch_bounds__(FLASH_THREADS) FlashDecodeKernel(const SkvAttnTask* tasks, SkvAttnTask one,
                                                                   float scale, int kv_dtype, float* part,
                                                                   int max_splits) {
  constexpr int DL = D / FLASH_LANES;
  // Keys per group per iteration. NOTE: with 4 (168 registers at d 128, g 4: fewer blocks per SM)
  // the dense 4 x 128K step measured 1.77 ms on an H200 against 1.46 with 2 (bench/NOTES.md v7b;
  // other changes in the same run, so not isolated).
  constexpr int KT = 2;
  __shared__ SkvSegment seg_s[4];
  __shared__ float m_s[FLASH_GROUPS][G], l_s[FLASH_GROUPS][G];
  __shared__ float acc_s[FLASH_GROUPS][G * D];
  const SkvAttnTask t = tasks ? tasks[blockIdx.x] : one;
  int64_t begin, end;
  if (!split_range(t, &begin, &end)) return;
  const SkvSegment* segs = t.segs;
  if (t.nseg <= 4) {
    if (threadIdx.x < t.nseg) seg_s[threadIdx.x] = t.segs[threadIdx.x];
    __syncthreads();
    segs = seg_s;
  }
  const size_t esize = kv_dtype == SKV_F32 ? 4 : 2;
  bool vec = true;  // every row slice 16-byte aligned
  for (int s = 0; s < t.nseg; s++)
    vec = vec && (segs[s].k | segs[s].v | (uint64_t)(segs[s].ld * esize)) % 16 == 0;
  const int grp = threadIdx.x / FLASH_LANES, sub = threadIdx.x % FLASH_LANES, e0 = sub * DL;
  float q[G][DL], acc[G][DL], m[G], l[G];
#pragma unroll
  for (int j = 0; j < G; j++) {
    m[j] = -INFINITY;
    l[j] = 0.f;
#pragma unroll
    for (int e = 0; e < DL; e++) {
      q[j][e] = t.q[j * D + e0 + e] * (scale * LOG2E);
      acc[j][e] = 0.f;
    }
  }
  // NOTE: a warp's two groups take adjacent keys and leave the loop together: the shuffles below
  // need every lane of the warp.
  const int warp = threadIdx.x / 32, warp_keys = (32 / FLASH_LANES) * KT;
  for (int64_t kw = begin + (int64_t)warp * warp_keys; kw < end; kw += (FLASH_THREADS / 32) * warp_keys) {
    const int64_t k0 = kw + (int64_t)(grp % (32 / FLASH_LANES)) * KT;
    float kx[KT][DL], vx[KT][DL], s[KT][G];
#pragma unroll
    for (int kt = 0; kt < KT; kt++) {
      if (k0 + kt < end) {
        const char *kr, *vr;
        locate(segs, t.nseg, k0 + kt, &kr, &vr, esize);
        load_slice<DL>(kr, kv_dtype, e0, vec, kx[kt]);
        load_slice<DL>(vr, kv_dtype, e0, vec, vx[kt]);
      } else {
#pragma unroll
        for (int e = 0; e < DL; e++) kx[kt][e] = vx[kt][e] = 0.f;
      }
    }
#pragma unroll
    for (int kt = 0; kt < KT; kt++)
#pragma unroll
      for (int j = 0; j < G; j++) {
        float x = 0.f;
#pragma unroll
        for (int e = 0; e < DL; e++) x = fmaf(q[j][e], kx[kt][e], x);
#pragma unroll
        for (int o = FLASH_LANES / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
        s[kt][j] = k0 + kt < end ? x : -INFINITY;
      }
#pragma unroll
    for (int j = 0; j < G; j++) {
      float mt = m[j];
#pragma unroll
      for (int kt = 0; kt < KT; kt++) mt = s[kt][j] > mt ? s[kt][j] : mt;
      if (mt == -INFINITY) continue;  // nothing visible yet
      const float f = exp2f(m[j] - mt);  // 0 while m was -inf
      float p[KT], ps = 0.f;
#pragma unroll
      for (int kt = 0; kt < KT; kt++) {
        p[kt] = exp2f(s[kt][j] - mt);
        ps += p[kt];
      }
      l[j] = l[j] * f + ps;
      m[j] = mt;
#pragma unroll
      for (int e = 0; e < DL; e++) {
        float a = acc[j][e] * f;
#pragma unroll
        for (int kt = 0; kt < KT; kt++) a = fmaf(p[kt], vx[kt][e], a);
        acc[j][e] = a;
      }
    }
  }
  // Merge the groups: rescale each to the block's max, then sum in group order.
  if (sub == 0)
#pragma unroll
    for (int j = 0; j < G; j++) m_s[grp][j] = m[j];
  __syncthreads();
  float* mine = partials(part, max_splits, G, D);
#pragma unroll
  for (int j = 0; j < G; j++) {
    float M = -INFINITY;
    for (int r = 0; r < FLASH_GROUPS; r++) M = m_s[r][j] > M ? m_s[r][j] : M;
    const float f = M == -INFINITY || m[j] == -INFINITY ? 0.f : exp2f(m[j] - M);
#pragma unroll
    for (int e = 0; e < DL; e++) acc_s[grp][j * D + e0 + e] = acc[j][e] * f;
    if (sub == 0) l_s[grp][j] = l[j] * f;
    if (threadIdx.x == 0) mine[j] = M;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
    float a = 0.f;
    for (int r = 0; r < FLASH_GROUPS; r++) a += acc_s[r][i];
    mine[2 * G + i] = a;
  }
  if (threadIdx.x < G) {
    float L = 0.f;
    for (int r = 0; r < FLASH_GROUPS; r++) L += l_s[r][threadIdx.x];
    mine[G + threadIdx.x] = L;
  }
}

// The shared-memory tile kernel (any d and g), natural-exp domain.
__global__ void __launch_bounds__(ATTN_THREADS) TileDecodeKernel(const SkvAttnTask* tasks, SkvAttnTask one, int g, int d,
                                                                 float scale, int kv_dtype, float* part, int max_splits) {
  extern __shared__ float smem[];
  __shared__ uint64_t krow[ATTN_TILE], vrow[ATTN_TILE];
  const SkvAttnTask t = tasks ? tasks[blockIdx.x] : one;
  int64_t begin, end;
  if (!split_range(t, &begin, &end)) return;
  AttnState s = attn_state(smem, g, d);
  for (int i = threadIdx.x; i < g * d; i += blockDim.x) s.q[i] = scale * t.q[i];
  for (int j = threadIdx.x; j < g; j += blockDim.x) s.vis[j] = INT_MAX;  // no mask: every key is visible
  attn_reset(s);
  __syncthreads();
  const size_t esize = kv_dtype == SKV_F32 ? 4 : 2;
  for (int64_t t0 = begin; t0 < end; t0 += ATTN_TILE) {
    const int n = (int)skv_min64(ATTN_TILE, end - t0);
    if (threadIdx.x < n) {
      const char *kr, *vr;
      locate(t.segs, t.nseg, t0 + threadIdx.x, &kr, &vr, esize);
      krow[threadIdx.x] = reinterpret_cast<uint64_t>(kr);
      vrow[threadIdx.x] = reinterpret_cast<uint64_t>(vr);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n * d; i += blockDim.x) {
      const int r = i / d;
      attn_stage_row(s, r, reinterpret_cast<const void*>(krow[r]), reinterpret_cast<const void*>(vrow[r]), kv_dtype, i % d);
    }
    __syncthreads();
    attn_tile(s, n, 0);
  }
  float* mine = partials(part, max_splits, g, d);
  for (int j = threadIdx.x; j < g; j += blockDim.x) {
    mine[j] = s.m[j];
    mine[g + j] = s.l[j];
  }
  for (int i = threadIdx.x; i < g * d; i += blockDim.x) mine[2 * g + i] = s.acc[i];
}

// Task blockIdx.x, head blockIdx.y: out = sum_b acc_b w_b / sum_b l_b w_b, w_b = 2^(m_b - M) (base e
// for the tile kernel); zeros when the task has no key. Counts attended tokens and heads for the
// fused step. NOTE: blockDim.x >= ATTN_MAX_SPLITS (one thread per split).
__global__ void __launch_bounds__(ATTN_MAX_SPLITS) AttentionMergeKernel(const SkvAttnTask* tasks, SkvAttnTask one, int g,
                                                                        int d, const float* part, int max_splits,
                                                                        int base2) {
  __shared__ float w[ATTN_MAX_SPLITS];
  __shared__ float red[ATTN_MAX_SPLITS / 32];
  __shared__ float inv_l;
  const SkvAttnTask t = tasks ? tasks[blockIdx.x] : one;
  if (!t.out) return;
  const int j = blockIdx.y, b = threadIdx.x;
  const int nb = t.total > 0 ? attn_splits(t.total) : 0;
  const size_t stride = (size_t)g * (d + 2);
  const float* p = part + (size_t)blockIdx.x * max_splits * stride;
  const float m = b < nb ? p[b * stride + j] : -INFINITY;
  float M = warp_max(m);
  if (b % 32 == 0) red[b / 32] = M;
  __syncthreads();
  M = -INFINITY;
  for (int i = 0; i < (int)blockDim.x / 32; i++) M = red[i] > M ? red[i] : M;
  w[b] = m == -INFINITY ? 0.f : base2 ? exp2f(m - M) : skv_exp(m - M);
  __syncthreads();
  if (b == 0) {
    float L = 0.f;
    for (int i = 0; i < nb; i++) L += p[i * stride + g + j] * w[i];
    inv_l = L > 0.f ? 1.f / L : 0.f;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < d; e += blockDim.x) {
    float a = 0.f;
    for (int i = 0; i < nb; i++) a += p[i * stride + 2 * g + (size_t)j * d + e] * w[i];
    store_f32(t.out, t.out_dtype, (size_t)j * d + e, a * inv_l);
  }
  if (t.counters && j == 0 && threadIdx.x == 0) {
    atomicAdd(&t.counters[SKV_ATTENDED_TOKENS_COUNTER], (double)t.total);
    atomicAdd(&t.counters[SKV_LAST_ATTENDED_TOKENS_COUNTER], (double)t.total);
    atomicAdd(&t.counters[SKV_HEADS_COUNTER], 1.0);
    atomicAdd(&t.counters[SKV_LAST_HEADS_COUNTER], 1.0);
  }
}

template <int D, int G>
cudaError_t LaunchFlash(const SkvAttnTask* tasks, const SkvAttnTask& one, dim3 grid, float scale, int kv_dtype,
                        float* part, int max_splits, cudaStream_t stream) {
  FlashDecodeKernel<D, G><<<grid, FLASH_THREADS, 0, stream>>>(tasks, one, scale, kv_dtype, part, max_splits);
  return cudaGetLastError();
}

// The register kernel for (d, g), or null when the shape takes the tile kernel.
using FlashLauncher = cudaError_t (*)(const SkvAttnTask*, const SkvAttnTask&, dim3, float, int, float*, int, cudaStream_t);
FlashLauncher flash_for(int d, int g) {
#define SKV_FLASH(D_, G_) \
  if (d == D_ && g == G_) return LaunchFlash<D_, G_>;
  SKV_FLASH(64, 1) SKV_FLASH(64, 2) SKV_FLASH(64, 4) SKV_FLASH(64, 8)
  SKV_FLASH(128, 1) SKV_FLASH(128, 2) SKV_FLASH(128, 4) SKV_FLASH(128, 8)
  SKV_FLASH(256, 1) SKV_FLASH(256, 2) SKV_FLASH(256, 4)
#undef SKV_FLASH
  return nullptr;
}

}  // namespace

cudaError_t Attention(const SkvAttnTask* tasks, const SkvAttnTask& one, int ntasks, int max_splits, int g, int d,
                      float scale, int kv_dtype, float* part, cudaStream_t stream) {
  if (ntasks <= 0 || g <= 0 || d <= 0) return cudaSuccess;
  if (ntasks > 0x7fffffff || max_splits > ATTN_MAX_SPLITS) return cudaErrorInvalidValue;
  const dim3 grid((unsigned)ntasks, (unsigned)max_splits);
  const FlashLauncher flash = flash_for(d, g);
  if (flash) {
    SKV_CUDA_CALL(flash(tasks, one, grid, scale, kv_dtype, part, max_splits, stream));
  } else {
    const size_t smem = attn_smem_bytes(g, d);
    SKV_CUDA_CALL(skv_smem_optin(TileDecodeKernel, smem));
    TileDecodeKernel<<<grid, ATTN_THREADS, smem, stream>>>(tasks, one, g, d, scale, kv_dtype, part, max_splits);
    SKV_LAUNCH_CHECK();
  }
  AttentionMergeKernel<<<dim3(ntasks, g), ATTN_MAX_SPLITS, 0, stream>>>(tasks, one, g, d, part, max_splits, flash ? 1 : 0);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}

size_t SparseAttentionWorkspace(int g, int d, int64_t total) {
  return sizeof(float) * AttentionPartials(1, attn_splits_host(total), g > 0 ? g : 0, d > 0 ? d : 0);
}

cudaError_t SparseAttention(const float* q, int g, int d, float scale, const SkvSegment* segs, int nseg,
                            int64_t total, int kv_dtype, float* out, SkvWorkspace ws, cudaStream_t stream) {
  if (g <= 0 || d <= 0) return cudaSuccess;
  if (total <= 0 || nseg <= 0) return cudaMemsetAsync(out, 0, sizeof(float) * (size_t)g * d, stream);  // no keys: zeros
  if (ws.bytes < SparseAttentionWorkspace(g, d, total)) return cudaErrorInvalidValue;
  const SkvAttnTask one{q, segs, total, out, nullptr, nseg, SKV_F32};
  return Attention(nullptr, one, 1, attn_splits_host(total), g, d, scale, kv_dtype, static_cast<float*>(ws.ptr), stream);
}
