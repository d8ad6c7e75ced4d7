// Key reconstruction of a group of chunks of one kv head, shared by the rebuild op
// (rebuild_keys.cu) and the fused decode step (decode_layer.cu): row t of chunk i is
// RoPE_pos(U[pos, 0:rank] . SVh) with pos = ids[i]*C + t, stored in slot slots[i].
// The block's U rows (transposed) and SVh are staged in shared memory as f32 with 16-byte loads,
// all in flight at once, a rank tile at a time (one tile for rank <= 160 at d 128). Each thread then
// owns 2 tokens x 4 RoPE pairs (1 x 1 where d is not a multiple of 8), so a step over r is 3 vector
// shared loads for 16 FMAs. Each output pair sums over r in ascending order (one fmaf per term,
// from 0), so every layout of the work gives the same bits.
#pragma once
#include "common.cuh"
#include "dtype.cuh"
#include "rope.cuh"

enum { REBUILD_THREADS = 256, REBUILD_TOKENS = 32, REBUILD_SMEM = 104 * 1024 };

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

// Chunks per block (REBUILD_TOKENS rows, at least one chunk), the staged token count (padded to the
// thread tile) and the rank tile that fits in REBUILD_SMEM.
__host__ __device__ __forceinline__ int rebuild_chunks_per_block(int C) { return C >= REBUILD_TOKENS ? 1 : REBUILD_TOKENS / C; }
__host__ __device__ __forceinline__ int rebuild_tokens(int C) { return (rebuild_chunks_per_block(C) * C + 1) / 2 * 2; }
__host__ __device__ __forceinline__ int rebuild_rank_tile(int C, int d) {
  const int rt = REBUILD_SMEM / (int)((rebuild_tokens(C) + d) * sizeof(float));
  return rt > 8 ? rt / 8 * 8 : 1;  // a multiple of 8: the next tile's 16-byte words stay aligned
}
__host__ __device__ __forceinline__ size_t rebuild_smem_bytes(int C, int d) {
  return (size_t)rebuild_rank_tile(C, d) * (rebuild_tokens(C) + d) * sizeof(float);
}

// n elements of a row (as f32) into dst[0], dst[stride], ...: 16-byte words where the row allows.
__device__ __forceinline__ void stage_row_word(const void* base, int dtype, size_t first, int n, float* dst, int stride) {
  const size_t size = skv_dtype_size(dtype), per = 16 / size;
  const char* p = static_cast<const char*>(base) + first * size;
  if (n == (int)per && reinterpret_cast<uintptr_t>(p) % 16 == 0) {
    const uint4 w = *reinterpret_cast<const uint4*>(p);
    float x[8];
    if (dtype == SKV_F32) {
      x[0] = __uint_as_float(w.x), x[1] = __uint_as_float(w.y), x[2] = __uint_as_float(w.z), x[3] = __uint_as_float(w.w);
    } else {
      unpack8_16bit(w, dtype, x);
    }
#pragma unroll
    for (int i = 0; i < 8; i++)
      if (i < (int)per) dst[i * stride] = x[i];
    return;
  }
  for (int i = 0; i < n; i++) dst[i * stride] = load_f32(base, dtype, first + i);
}

// Rows x cols of a matrix (row i starts at element row_at(i)) as f32 into smem: element (i, j) at
// dst[i * si + j * sj]. Each thread takes whole 16-byte words; i runs fastest when `rows_fast`.
template <typename RowAt>
__device__ __forceinline__ void stage_matrix(const void* base, int dtype, RowAt row_at, int rows, int cols, float* dst, int si,
                                             int sj, bool rows_fast) {
  const int per = 16 / (int)skv_dtype_size(dtype), words = (cols + per - 1) / per;
  for (int w = threadIdx.x; w < rows * words; w += blockDim.x) {
    const int i = rows_fast ? w % rows : w / words, j = (rows_fast ? w / rows : w % words) * per;
    stage_row_word(base, dtype, row_at(i) + j, min(per, cols - j), dst + (size_t)i * si + (size_t)j * sj, sj);
  }
}

// Output pairs of TT tokens x PP pairs per thread over the staged tile.
template <int TT, int PP>
__device__ __forceinline__ void rebuild_tile(const float* Ut, int Tp, const float* SVs, int d, int half, bool interleaved, int t0,
                                             int p0, int rt, float (&x1)[TT][PP], float (&x2)[TT][PP]) {
  for (int r = 0; r < rt; r++) {
    float u[TT], a[PP], b[PP];
    const float* ur = Ut + (size_t)r * Tp + t0;
    const float* sr = SVs + (size_t)r * d;
    if constexpr (TT == 2) {
      const float2 v = *reinterpret_cast<const float2*>(ur);
      u[0] = v.x;
      u[1] = v.y;
    } else {
      u[0] = ur[0];
    }
    if constexpr (PP == 4) {
      if (interleaved) {
        const float4 lo = *reinterpret_cast<const float4*>(sr + 2 * p0), hi = *reinterpret_cast<const float4*>(sr + 2 * p0 + 4);
        a[0] = lo.x, b[0] = lo.y, a[1] = lo.z, b[1] = lo.w, a[2] = hi.x, b[2] = hi.y, a[3] = hi.z, b[3] = hi.w;
      } else {
        const float4 va = *reinterpret_cast<const float4*>(sr + p0), vb = *reinterpret_cast<const float4*>(sr + half + p0);
        a[0] = va.x, a[1] = va.y, a[2] = va.z, a[3] = va.w, b[0] = vb.x, b[1] = vb.y, b[2] = vb.z, b[3] = vb.w;
      }
    } else {
      a[0] = sr[interleaved ? 2 * p0 : p0];
      b[0] = sr[interleaved ? 2 * p0 + 1 : half + p0];
    }
#pragma unroll
    for (int i = 0; i < TT; i++) {
#pragma unroll
      for (int j = 0; j < PP; j++) {
        x1[i][j] = fmaf(u[i], a[j], x1[i][j]);
        x2[i][j] = fmaf(u[i], b[j], x2[i][j]);
      }
    }
  }
}

template <int TT, int PP, typename Staged>
__device__ __forceinline__ void rebuild_group_tiled(const RebuildArgs& a, const int32_t* ids, const int32_t* slots, int n,
                                                    float* smem, Staged staged) {
  const int half = a.d / 2, T = n * a.C, Tp = rebuild_tokens(a.C), RT = rebuild_rank_tile(a.C, a.d);
  const bool interleaved = a.style == SKV_ROPE_INTERLEAVED;
  float* Ut = smem;                     // [RT][Tp]: token fastest (a pad token, never stored, where T is odd)
  float* SVs = smem + (size_t)RT * Tp;  // [RT][d]
  const int tok_tiles = (T + TT - 1) / TT, pair_tiles = half / PP, tiles = tok_tiles * pair_tiles;
  const int n_rank_tiles = (a.rank + RT - 1) / RT;
  auto pos_of = [&](int t) { return (int64_t)ids[t / a.C] * a.C + t % a.C; };
  for (int pass = 0; pass * (int)blockDim.x < tiles; pass++) {
    const int tile = pass * blockDim.x + threadIdx.x;
    // Pairs vary fastest across a warp: its SVh reads are consecutive, its U reads broadcast.
    const int t0 = (tile / pair_tiles) * TT, p0 = (tile % pair_tiles) * PP;
    float x1[TT][PP], x2[TT][PP];
#pragma unroll
    for (int i = 0; i < TT; i++)
#pragma unroll
      for (int j = 0; j < PP; j++) x1[i][j] = x2[i][j] = 0.f;
    for (int k = 0; k < n_rank_tiles; k++) {
      const int r0 = k * RT, rt = min(RT, a.rank - r0);
      if (pass == 0 || n_rank_tiles > 1) {  // one tile holds the whole rank: staged once for every pass
        __syncthreads();                     // the previous tile is consumed
        stage_matrix(a.U, a.u_dtype, [&](int t) { return (size_t)(pos_of(t) * a.rank + r0); }, T, rt, Ut, 1, Tp, true);
        stage_matrix(a.SVh, a.sv_dtype, [&](int r) { return (size_t)((r0 + r) * a.ldsv); }, rt, a.d, SVs, a.d, 1, false);
        __syncthreads();
        if (pass == 0 && k == 0) staged();
      }
      if (tile < tiles) rebuild_tile<TT, PP>(Ut, Tp, SVs, a.d, half, interleaved, t0, p0, rt, x1, x2);
    }
    if (tile >= tiles) continue;
    // RoPE at pos, then the slot.
#pragma unroll
    for (int i = 0; i < TT; i++) {
      const int t = t0 + i;
      if (t >= T) break;
      const int64_t pos = pos_of(t);
      const size_t row = (size_t)(((int64_t)slots[t / a.C] * a.C + t % a.C) * a.ldo);
#pragma unroll
      for (int j = 0; j < PP; j++) {
        const int p = p0 + j, e1 = interleaved ? 2 * p : p, e2 = interleaved ? 2 * p + 1 : p + half;
        float c, s;
        rope_rotation(pos, a.inv_freq[p], &c, &s);
        store_f32(a.out, a.out_dtype, row + e1, __fsub_rn(__fmul_rn(x1[i][j], c), __fmul_rn(x2[i][j], s)));
        store_f32(a.out, a.out_dtype, row + e2, __fadd_rn(__fmul_rn(x2[i][j], c), __fmul_rn(x1[i][j], s)));
      }
    }
  }
}

// Rebuilds chunks ids[0, n) (n <= rebuild_chunks_per_block) into their slots. smem: rebuild_smem_bytes.
// staged() runs once the first tile of U and SVh is in shared memory, before the arithmetic: the
// fused step issues its value reads there (issued earlier, they slowed the tile's own loads).
template <typename Staged>
__device__ __forceinline__ void rebuild_group(const RebuildArgs& a, const int32_t* ids, const int32_t* slots, int n, float* smem,
                                              Staged staged) {
  if (a.d % 8 == 0) rebuild_group_tiled<2, 4>(a, ids, slots, n, smem, staged);
  else rebuild_group_tiled<1, 1>(a, ids, slots, n, smem, staged);
}
__device__ __forceinline__ void rebuild_group(const RebuildArgs& a, const int32_t* ids, const int32_t* slots, int n, float* smem) {
  rebuild_group(a, ids, slots, n, smem, [] {});
}
