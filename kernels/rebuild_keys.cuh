// Key reconstruction of a group of chunks of one kv head, shared by the rebuild op
// (rebuild_keys.cu) and the fused decode step (decode_layer.cu): row t of chunk i is
// RoPE_pos(U[pos, 0:rank] . SVh) with pos = ids[i]*C + t, stored in slot slots[i]. Tiles of U rows
// and of SVh are staged in shared memory as f32; each output pair sums over r in ascending order
// (one fmaf per term), so every layout of the work gives the same bits.
#pragma once
#include "common.cuh"
#include "dtype.cuh"
#include "rope.cuh"

enum { REBUILD_THREADS = 256, REBUILD_TOKENS = 64, REBUILD_ITEMS = 16 };

struct RebuildArgs {
  const void* U;
  int u_dtype, rank;
  const void* SVh;
  int sv_dtype;
  int64_t ldsv;
  int d, C;
  const double* inv_freq;
  int style;
  void* out;
  int out_dtype;
  int64_t ldo;
};

// Chunks per block and the rank tile: REBUILD_TOKENS rows (at least one chunk), a tile of U rows
// and of SVh that fits in REBUILD_SMEM bytes.
__host__ __device__ __forceinline__ int rebuild_chunks_per_block(int C) { return C >= REBUILD_TOKENS ? 1 : REBUILD_TOKENS / C; }
__host__ __device__ __forceinline__ int rebuild_rank_tile(int C, int d) {
  const int T = rebuild_chunks_per_block(C) * C;
  int rt = 32;
  while (rt > 1 && (size_t)rt * (T + d) * sizeof(float) > 40 * 1024) rt /= 2;
  return rt;
}
__host__ __device__ __forceinline__ size_t rebuild_smem_bytes(int C, int d) {
  const int T = rebuild_chunks_per_block(C) * C;
  return (size_t)rebuild_rank_tile(C, d) * (T + d) * sizeof(float);
}

// Rebuilds chunks ids[0, n) (n <= rebuild_chunks_per_block) into their slots. smem: rebuild_smem_bytes.
__device__ __forceinline__ void rebuild_group(const RebuildArgs& a, const int32_t* ids, const int32_t* slots, int n,
                                              float* smem) {
  const int half = a.d / 2, T = n * a.C, RT = rebuild_rank_tile(a.C, a.d);
  float* Us = smem;                                               // [T][RT]
  float* SVs = smem + (size_t)rebuild_chunks_per_block(a.C) * a.C * RT;  // [RT][d]
  const int items = T * half;
  // The two elements of RoPE pair p.
  auto col1 = [&](int p) { return a.style == SKV_ROPE_INTERLEAVED ? 2 * p : p; };
  auto col2 = [&](int p) { return a.style == SKV_ROPE_INTERLEAVED ? 2 * p + 1 : p + half; };
  const bool fixed = REBUILD_THREADS % half == 0;
  const int own = threadIdx.x % half;  // every item's pair when `fixed`
  for (int i0 = 0; i0 < items; i0 += REBUILD_THREADS * REBUILD_ITEMS) {
    float x1[REBUILD_ITEMS], x2[REBUILD_ITEMS];
#pragma unroll
    for (int k = 0; k < REBUILD_ITEMS; k++) x1[k] = x2[k] = 0.f;
    for (int r0 = 0; r0 < a.rank; r0 += RT) {
      const int rt = min(RT, a.rank - r0);
      __syncthreads();  // the previous tile is consumed
      for (int w = threadIdx.x; w < T * rt; w += blockDim.x) {
        const int t = w / rt, r = w % rt;
        const int64_t pos = (int64_t)ids[t / a.C] * a.C + t % a.C;
        Us[t * RT + r] = load_f32(a.U, a.u_dtype, (size_t)(pos * a.rank + r0 + r));
      }
      for (int w = threadIdx.x; w < rt * a.d; w += blockDim.x) {
        const int r = w / a.d, e = w % a.d;
        SVs[r * a.d + e] = load_f32(a.SVh, a.sv_dtype, (size_t)((r0 + r) * a.ldsv + e));
      }
      __syncthreads();
      // Where every item of this thread has the same pair (the common head dims), its two SVh
      // columns are read once per r. The sum over r is the same either way.
      for (int r = 0; r < rt; r++) {
        const float sv1 = SVs[r * a.d + col1(own)], sv2 = SVs[r * a.d + col2(own)];
#pragma unroll
        for (int k = 0; k < REBUILD_ITEMS; k++) {
          const int item = i0 + k * REBUILD_THREADS + threadIdx.x;
          if (item >= items) break;
          const int p = item % half;
          const float u = Us[(item / half) * RT + r];
          x1[k] = fmaf(u, fixed ? sv1 : SVs[r * a.d + col1(p)], x1[k]);
          x2[k] = fmaf(u, fixed ? sv2 : SVs[r * a.d + col2(p)], x2[k]);
        }
      }
    }
    // RoPE at pos, then the slot.
#pragma unroll
    for (int k = 0; k < REBUILD_ITEMS; k++) {
      const int item = i0 + k * REBUILD_THREADS + threadIdx.x;
      if (item >= items) break;
      const int t = item / half, p = item % half, e1 = col1(p), e2 = col2(p);
      const int64_t pos = (int64_t)ids[t / a.C] * a.C + t % a.C;
      float c, s;
      rope_rotation(pos, a.inv_freq[p], &c, &s);
      const size_t row = (size_t)(((int64_t)slots[t / a.C] * a.C + t % a.C) * a.ldo);
      store_f32(a.out, a.out_dtype, row + e1, __fsub_rn(__fmul_rn(x1[k], c), __fmul_rn(x2[k], s)));
      store_f32(a.out, a.out_dtype, row + e2, __fadd_rn(__fmul_rn(x2[k], c), __fmul_rn(x1[k], s)));
    }
  }
}
