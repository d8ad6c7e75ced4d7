// Key reconstruction of a group of chunks of one kv head, shared by the rebuild op
// (rebuild_keys.cu) and the fused decode step (decode_layer.cu): row t of chunk i is
// RoPE_pos(U[pos, 0:rank] . SVh) with pos = ids[i]*C + t, stored in slot slots[i].
// bf16 U and SVh (the bf16 store): on the tensor cores (rebuild_group_mma): the block's U rows and
// SVh staged as they are by cp.async, mma.sync m16n8k16 (bf16 products are exact in f32; the sums
// are the tensor cores', so a key may differ from the wasm runtime's in its last f32 bits).
// Otherwise (f32, f16, odd shapes): U rows (transposed) and SVh staged in shared memory as f32 with
// 16-byte loads, all in flight at once, a rank tile at a time (one tile for rank <= 160 at d 128).
// Each thread then owns 2 tokens x 4 RoPE pairs (1 x 1 where d is not a multiple of 8), so a step
// over r is 3 vector shared loads for 16 FMAs. Each output pair sums over r in ascending order (one
// fmaf per term, from 0), so every layout of the work gives the same bits as the wasm runtime.
// NOTE: the f32 path took ~26 us per wave of blocks at d 128, rank 160 (2 blocks per SM, bound by
// shared-memory latency at 16 warps), and was most of the decode step's fetch stage.
#pragma once
#include "common.cuh"
#include "dtype.cuh"
#include "mma.cuh"
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
  bool mma;  // on the tensor cores: rebuild_mma(...) on the host, whose shared memory the launch sized
};

// Chunks per block (REBUILD_TOKENS rows, at least one chunk), the staged token count (padded to the
// thread tile) and the rank tile that fits in REBUILD_SMEM.
__host__ __device__ __forceinline__ int rebuild_chunks_per_block(int C) { return C >= REBUILD_TOKENS ? 1 : REBUILD_TOKENS / C; }
__host__ __device__ __forceinline__ int rebuild_tokens(int C) { return (rebuild_chunks_per_block(C) * C + 1) / 2 * 2; }
__host__ __device__ __forceinline__ int rebuild_rank_tile(int C, int d) {
  const int rt = REBUILD_SMEM / (int)((rebuild_tokens(C) + d) * sizeof(float));
  return rt > 8 ? rt / 8 * 8 : 1;  // a multiple of 8: the next tile's 16-byte words stay aligned
}
// The tensor-core path's shared memory: U rows [REBUILD_TOKENS][K + 8] and SVh [K][d + 8] as bf16,
// K the rank padded to 16 (the pads keep ldmatrix's rows off one bank).
__host__ __device__ __forceinline__ int rebuild_mma_depth(int rank) { return (rank + 15) / 16 * 16; }
__host__ __device__ __forceinline__ size_t rebuild_mma_smem(int d, int rank) {
  const int K = rebuild_mma_depth(rank);
  return ((size_t)REBUILD_TOKENS * (K + 8) + (size_t)K * (d + 8)) * sizeof(uint16_t);
}
// Whether a rebuild runs on the tensor cores (decided on the host, which sizes the shared memory):
// bf16 operands whose rows are 16-byte aligned, RoPE pairs that fall in one thread's mma fragments
// (d a multiple of 16), a block's tokens in two m16 tiles; SHADOWKV_CUDA_REBUILD=simt turns it off
// (to measure it).
static inline bool rebuild_mma(const void* U, int u_dtype, const void* SVh, int sv_dtype, int64_t ldsv, int d, int rank, int C) {
  static const bool off = getenv("SHADOWKV_CUDA_REBUILD") && strcmp(getenv("SHADOWKV_CUDA_REBUILD"), "simt") == 0;
  return !off && u_dtype == SKV_BF16 && sv_dtype == SKV_BF16 && d % 16 == 0 && rank % 8 == 0 && ldsv % 8 == 0 &&
         rebuild_tokens(C) <= REBUILD_TOKENS && ((uintptr_t)U | (uintptr_t)SVh) % 16 == 0 &&
         rebuild_mma_smem(d, rank) <= REBUILD_SMEM;
}
// Shared memory of a rebuild block: the tensor-core path's, or the f32 tile's.
static inline size_t rebuild_smem_bytes(int C, int d, bool mma, int rank) {
  return mma ? rebuild_mma_smem(d, rank) : (size_t)rebuild_rank_tile(C, d) * (rebuild_tokens(C) + d) * sizeof(float);
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

// The tensor-core path (rebuild_mma). Warp w takes the output columns of n8 tiles j and j + d/16
// for j = w, w + 8, ..: for rotate-half RoPE, column p and its pair p + d/2 then sit in the same
// thread's fragments; interleaved pairs are adjacent columns of one fragment. NOTE: the sums stay in
// the mma accumulators (which round toward zero, mma.cuh): rank / 16 roundings of ~2^-24 each, far
// below the bf16 rounding of the stored key; a flush to f32 every few k-steps cost 16 registers.
template <typename Staged>
__device__ __forceinline__ void rebuild_group_mma(const RebuildArgs& a, const int32_t* ids, const int32_t* slots, int n,
                                                  void* smem, Staged staged) {
  using namespace skv_mma;
  const int d = a.d, half = d / 2, K = rebuild_mma_depth(a.rank), T = n * a.C, lu = K + 8, lb = d + 8;
  uint16_t* Us = static_cast<uint16_t*>(smem);    // [REBUILD_TOKENS][lu]: token rows
  uint16_t* Bs = Us + (size_t)REBUILD_TOKENS * lu;  // [K][lb]: SVh rows
  const uint16_t* U = static_cast<const uint16_t*>(a.U);
  const uint16_t* SV = static_cast<const uint16_t*>(a.SVh);
  auto pos_of = [&](int t) { return (int64_t)ids[t / a.C] * a.C + t % a.C; };
  // Rows past T and ranks past a.rank are zero-filled (nothing read).
  for (int w = threadIdx.x; w < REBUILD_TOKENS * (K / 8); w += blockDim.x) {
    const int t = w / (K / 8), c = w % (K / 8) * 8;
    const bool in = t < T && c < a.rank;
    cp_async16(Us + (size_t)t * lu + c, in ? U + pos_of(t) * a.rank + c : U, in ? 16 : 0);
  }
  for (int w = threadIdx.x; w < K * (d / 8); w += blockDim.x) {
    const int r = w / (d / 8), c = w % (d / 8) * 8;
    const bool in = r < a.rank;
    cp_async16(Bs + (size_t)r * lb + c, in ? SV + r * a.ldsv + c : SV, in ? 16 : 0);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  staged();
  const int lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const bool interleaved = a.style == SKV_ROPE_INTERLEAVED;
  for (int j = threadIdx.x / 32; j < d / 16; j += blockDim.x / 32) {
    const int tiles[2] = {j, j + d / 16};  // n8 tiles: columns 8 * tile + [0, 8)
    float acc[2][2][4] = {};
    for (int k = 0; k < K; k += 16) {
      uint32_t A[2][4], B[4];
#pragma unroll
      for (int m = 0; m < 2; m++) ldsm_x4(A[m], Us + (size_t)(m * 16 + lane % 16) * lu + k + lane / 16 * 8);
      // Matrices (k 0-7, tile 0), (k 8-15, tile 0), (k 0-7, tile 1), (k 8-15, tile 1).
      ldsm_x4_t(B, Bs + (size_t)(k + lane / 8 % 2 * 8 + lane % 8) * lb + (lane < 16 ? tiles[0] : tiles[1]) * 8);
#pragma unroll
      for (int m = 0; m < 2; m++) {
        mma_bf16(acc[m][0], A[m], B[0], B[1]);
        mma_bf16(acc[m][1], A[m], B[2], B[3]);
      }
    }
    // Fragment element i of (m, tile): token m * 16 + g + 8 * (i / 2), column 8 * tile + 2 q + i % 2.
#pragma unroll
    for (int m = 0; m < 2; m++) {
#pragma unroll
      for (int hr = 0; hr < 2; hr++) {
        const int t = m * 16 + g + 8 * hr;
        if (t >= T) continue;
        const int64_t pos = pos_of(t);
        const size_t row = (size_t)(((int64_t)slots[t / a.C] * a.C + t % a.C) * a.ldo);
        auto rotate = [&](int p, int e1, int e2, float x1, float x2) {
          float c, s;
          rope_rotation(pos, a.inv_freq[p], &c, &s);
          store_f32(a.out, a.out_dtype, row + e1, __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s)));
          store_f32(a.out, a.out_dtype, row + e2, __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s)));
        };
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const int i = 2 * hr + e;
          if (!interleaved) {
            const int p = 8 * tiles[0] + 2 * q + e;
            rotate(p, p, p + half, acc[m][0][i], acc[m][1][i]);
          } else {  // the pair (2p, 2p + 1) is elements 2 hr, 2 hr + 1 of one tile
            const int p = 4 * tiles[e] + q;
            rotate(p, 2 * p, 2 * p + 1, acc[m][e][2 * hr], acc[m][e][2 * hr + 1]);
          }
        }
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
  if (a.mma) rebuild_group_mma(a, ids, slots, n, smem, staged);
  else if (a.d % 8 == 0) rebuild_group_tiled<2, 4>(a, ids, slots, n, smem, staged);
  else rebuild_group_tiled<1, 1>(a, ids, slots, n, smem, staged);
}
__device__ __forceinline__ void rebuild_group(const RebuildArgs& a, const int32_t* ids, const int32_t* slots, int n, float* smem) {
  rebuild_group(a, ids, slots, n, smem, [] {});
}
