// Landmark logits on the tensor cores, the path landmark_logits (score.cuh) takes for bf16
// landmarks of 64 or 128 dims: a warp multiplies 16 staged landmark rows (ldmatrix) by the query
// heads of the pass (mma.sync m16n8k16, n = 8 heads), the f32 queries split into three bf16 parts
// (hi + mid + lo hold all 24 bits; each product with a bf16 landmark is exact in f32). Each k-step
// of 16 dims sums its three products in a fresh accumulator, then adds it, rounded to nearest, to
// the running f32 sum (the tensor cores round their own adds toward zero). The SIMT path was bound
// by its arithmetic (8 lanes per landmark and shuffles: 1.6 TB/s at 4 x 128K on an H200).
#pragma once
#include <float.h>
#include "common.cuh"
#include "mma.cuh"

enum { LOGIT_MMA_HEADS = 8 };  // the n of m16n8k16: query heads per pass

// Landmark range [c0, c1) of range b of the nb that split n landmarks.
__host__ __device__ __forceinline__ void logit_range(int64_t n, int b, int nb, int64_t* c0, int64_t* c1) {
  const int64_t per = (n + nb - 1) / nb;
  *c0 = (int64_t)b * per < n ? (int64_t)b * per : n;
  *c1 = *c0 + per < n ? *c0 + per : n;
}

// Whether the tensor-core path takes these landmarks (the query fragments of 64 or 128 dims stay
// in registers; the word swizzle needs 8 words or more per row).
__device__ __forceinline__ bool logits_mma_ok(int dtype, int d) { return dtype == SKV_BF16 && (d == 64 || d == 128); }

// Where 16-byte word `w` of staged row `row` sits: XOR-swizzled within each 8 words, so that the 8
// rows ldmatrix reads for one 8 x 8 matrix land in 8 different bank groups (rows are 128 or 256
// bytes apart: unswizzled, all 8 would share one).
__device__ __forceinline__ int logits_swizzle(int row, int w) { return w ^ (row & 7); }

// x, y (x in the low half) as three bf16x2 parts whose sum is exact: hi, then what hi missed, then
// what both missed.
__device__ __forceinline__ void split3_bf16x2(float x, float y, uint32_t& hi, uint32_t& mid, uint32_t& lo) {
  skv_mma::split_bf16x2(x, y, hi, mid);
  const float xr = __fsub_rn(__fsub_rn(x, __uint_as_float(hi << 16)), __uint_as_float(mid << 16));
  const float yr = __fsub_rn(__fsub_rn(y, __uint_as_float(hi & 0xffff0000u)), __uint_as_float(mid & 0xffff0000u));
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(lo) : "f"(yr), "f"(xr));  // NOTE: the first source is the upper half
}

// The tile stream of logits_group_mma over ranges [b0, b1) of the partition of n landmarks into nb
// (logit_range), bf16 rows of D dims: tiles walk the ranges in order, per_range to a range (empty
// past its rows), so none spans two; tile i goes to stage i % STAGES of `stage` (STAGES x
// TILE_BYTES), its rows XOR-swizzled. NOTE: 32-bit tile arithmetic: with logit_range's 64-bit
// bounds the kernel spilled 52 bytes at its 128 registers; it still spills 36 (none with one range
// a block; not traced to a line).
template <int D, int STAGES, int TILE_BYTES>
struct LogitTiles {
  static constexpr int ROW_BYTES = D * 2, WORDS = ROW_BYTES / 16, PER = TILE_BYTES / ROW_BYTES;
  const char* landmarks;
  char* stage;
  int len, span, per_range, b0, ranges;
  int ik = 0, it = 0, stage_in = 0;  // the next tile to issue: range, tile, stage

  __device__ __forceinline__ LogitTiles(const void* l, int64_t n, int nb, int b0_, int b1, char* st)
      : landmarks(static_cast<const char*>(l)), stage(st), len((int)n), span(((int)n + nb - 1) / nb),
        per_range(max(1, (span + PER - 1) / PER)), b0(b0_), ranges(b1 - b0_) {}
  // The rows of tile `t` of range b0 + k: their first, and how many.
  __device__ __forceinline__ int rows_of(int k, int t, int* r0) const {
    const int c0 = min((b0 + k) * span, len), c1 = min(c0 + span, len);  // logit_range's bounds
    *r0 = c0 + t * PER;
    return max(0, min(PER, c1 - *r0));
  }
  // Requests the next tile, committing a group even when it is empty (so the waits count right);
  // copy = false only steps past a tile that logits_mma_prefetch requested.
  __device__ __forceinline__ void issue(bool copy = true) {
    if (ik < ranges && copy) {
      int r0;
      const int rn = rows_of(ik, it, &r0);
      const char* src = landmarks + (size_t)r0 * ROW_BYTES;
      char* dst = stage + stage_in * TILE_BYTES;
      for (int w = threadIdx.x; w < rn * WORDS; w += blockDim.x) {
        const int row = w / WORDS;
        skv_mma::cp_async16(reinterpret_cast<uint16_t*>(dst + row * ROW_BYTES + logits_swizzle(row, w % WORDS) * 16), src + (size_t)w * 16, 16);
      }
    }
    if (ik < ranges) {
      if (++it == per_range) it = 0, ik++;
      stage_in = stage_in == STAGES - 1 ? 0 : stage_in + 1;
    }
    if (copy) skv_mma::cp_async_commit();
  }
};

// The first STAGES - 1 tiles of logits_group_mma's first pass over ranges [b0, b1), requested
// before the queries are known (StepLogitsKernel with the append folded in: while it rotates them).
template <int D, int STAGES, int TILE_BYTES>
__device__ __forceinline__ void logits_mma_prefetch(const void* landmarks, int64_t n, int nb, int b0, int b1, char* stage) {
  LogitTiles<D, STAGES, TILE_BYTES> tiles(landmarks, n, nb, b0, b1, stage);
  for (int t = 0; t < STAGES - 1; t++) tiles.issue();
}

// A range's max logit per head, by the whole block at the range's end: mx holds this lane's two
// heads, (lane % 4) * 2 + {0, 1}, over its rows; the max goes over the lanes that share a head,
// then over the warps through red ([warps x LOGIT_MMA_HEADS]); heads [0, gj) to out[j]. mx is
// reset for the next range. NOTE: red is read before any thread passes the next tile's barrier, so
// one buffer serves.
__device__ __forceinline__ void logits_range_max(float (&mx)[2], float* red, int gj, float* out) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
#pragma unroll
  for (int o = 4; o < 32; o <<= 1)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const float v = __shfl_xor_sync(0xffffffffu, mx[h], o);
      mx[h] = v > mx[h] ? v : mx[h];
    }
  if (lane < 4) {
    red[warp * LOGIT_MMA_HEADS + lane * 2] = mx[0];
    red[warp * LOGIT_MMA_HEADS + lane * 2 + 1] = mx[1];
  }
  mx[0] = mx[1] = -INFINITY;
  __syncthreads();
  if (threadIdx.x < gj) {
    float m = -INFINITY;
    for (int w = 0; w < warps; w++) m = red[w * LOGIT_MMA_HEADS + threadIdx.x] > m ? red[w * LOGIT_MMA_HEADS + threadIdx.x] : m;
    out[threadIdx.x] = m;
  }
}

// Ranges [b0, b1) of the partition of n landmarks into nb (logit_range), bf16 rows of D dims,
// against query heads [j0, j0 + gj) (gj <= 8) of q [g x D] f32: logits[j * ld + c] = scale * q_j .
// L_c, and each range's max per head (NaN-ignoring, -inf when empty) into maxes[(b - b0) * g + j0
// + j] (g: the heads of q). Rows stream through `stage` (LogitTiles) by cp.async, one pipeline over
// all the ranges, so a block that takes several ranges pays its pipeline's fill once. prefetched:
// logits_mma_prefetch requested the first tiles. Called by a whole block; red: shared [warps *
// LOGIT_MMA_HEADS]. GUARD and bound: the two ways to see a logit past f32 (below).
template <int D, int STAGES, int TILE_BYTES, bool GUARD>
__device__ __forceinline__ void logits_group_mma(const float* q, int j0, int gj, float scale, const void* landmarks, int64_t n,
                                                 int nb, int b0, int b1, float* logits, int64_t ld, float* maxes, int g,
                                                 float* red, char* stage, bool prefetched, float bound) {
  constexpr int ROW_BYTES = D * 2, KS = D / 16;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  LogitTiles<D, STAGES, TILE_BYTES> tiles(landmarks, n, nb, b0, b1, stage);
  for (int t = 0; t < STAGES - 1; t++) tiles.issue(!prefetched);
  // B fragments (k x n, n = lane / 4 = head): dims ks * 16 + (lane % 4) * 2 + {0, 1} (+ 8 for the
  // second), in shared memory, [k-step][part][lane], read before each mma. NOTE: held in registers
  // (48 a thread at d 128) they left the kernel at its 128-register cap with spills (bench/NOTES.md
  // v36). Written before the first tile's barrier.
  __shared__ uint2 frag[KS][3][32];
  // Each head's queries enter the tensor cores scaled by 2^-s, so that max |q| 2^-s < 2^-6: then no
  // product with a bf16 landmark (< 2^128) nor a k-step's sum of 16 reaches 2^126, and the adds, which
  // round toward zero, never saturate at FLT_MAX. NOTE: unscaled, a product past FLT_MAX would
  // saturate, and two of opposite sign cancel to a finite, wrong logit that no overflow check sees
  // (what cuda-bf16 showed on an H100, bench/NOTES.md v56). The epilogue multiplies by up[head] =
  // scale 2^s: a power of two scales the exact products and every rounding with them, so a logit that
  // does not overflow keeps the unscaled path's bits (away from subnormal products).
  // And the scaling hides an overflow the f32 path would have had, whose float64 redo the head then
  // needs. A row L whose max |L_i| passes lim = FLT_MAX / (D max |q|) could make a product or a
  // partial sum pass FLT_MAX, so its logit must be NaN, which fails the head's softmax (head_inverse)
  // and scores it in float64. No model's logits come near (it takes |q| |L| > 2^120 at d 128). Two
  // ways to see it: with GUARD (the scoring op, which knows nothing of its landmarks) each row's
  // max |L_i| from its A fragments; the fused step passes its head's bound instead, the max |L_i|
  // kept where landmarks are written (landmark_bounds.cu), and a bound past lim makes every logit
  // of the head NaN through up[]. NOTE: the step cannot afford GUARD: it cost the logits stage 5 us
  // of 66 at 4 x 128K on an H100, with masks or without (bench/NOTES.md v57); the bound costs it a
  // division a head.
  __shared__ float down[LOGIT_MMA_HEADS], up[LOGIT_MMA_HEADS], lim[LOGIT_MMA_HEADS];
  for (int hn = warp; hn < LOGIT_MMA_HEADS; hn += warps) {
    float m = 0.f;
    if (hn < gj)
      for (int e = lane; e < D; e += 32) m = fmaxf(m, fabsf(q[(size_t)(j0 + hn) * D + e]));
    m = warp_max(m);
    if (lane == 0) {
      int ex = 0;
      frexpf(m, &ex);  // m < 2^ex; the caller keeps |q| below 1e30, so s <= 106
      const int sh = m > 0.f && ex + 6 > 0 ? ex + 6 : 0;
      const float past = m > 0.f ? FLT_MAX / (D * m) : INFINITY;
      down[hn] = __int_as_float((127 - sh) << 23);
      up[hn] = bound > past ? NAN : scale * __int_as_float((127 + sh) << 23);
      if (GUARD) lim[hn] = past;
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < KS * 32; i += blockDim.x) {
    const int ks = i / 32, l = i % 32, hn = l / 4, e = ks * 16 + (l % 4) * 2;
    uint32_t part[3][2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const float x = hn < gj ? q[(size_t)(j0 + hn) * D + e + 8 * h] * down[hn] : 0.f,
                  y = hn < gj ? q[(size_t)(j0 + hn) * D + e + 8 * h + 1] * down[hn] : 0.f;
      split3_bf16x2(x, y, part[0][h], part[1][h], part[2][h]);
    }
#pragma unroll
    for (int p = 0; p < 3; p++) frag[ks][p][l] = make_uint2(part[p][0], part[p][1]);
  }
  const int ranges = b1 - b0, per_range = tiles.per_range;
  float mx[2] = {-INFINITY, -INFINITY};  // heads (lane % 4) * 2 + {0, 1}
  for (int k = 0, t = 0, at = 0; k < ranges;) {
    skv_mma::cp_async_wait<STAGES - 2>();
    __syncthreads();  // this tile is in for every thread, and the last one's stage is free
    tiles.issue();
    const char* tile = stage + at * TILE_BYTES;
    at = at == STAGES - 1 ? 0 : at + 1;
    int r0;
    const int rn = tiles.rows_of(k, t, &r0);
    // NOTE: rows past rn hold an older tile's bytes; their outputs are never stored.
    for (int m0 = warp * 16; m0 < rn; m0 += warps * 16) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      // Rows m0 + lane / 4 (+ 8), this lane's dims: the max of their bf16 bits as unsigned halves (the
      // largest negative magnitude, where one is negative) and as signed (the largest positive one, where
      // one is positive); their magnitudes' max is the rows' max |L_i|. Fewer instructions than a mask
      // (a & 0x7fff7fff) per fragment, though in the fused step both cost the same (above).
      uint32_t bu[2] = {0u, 0u}, bs[2] = {0x80008000u, 0x80008000u};
      const int arow = m0 + lane % 8 + 8 * ((lane / 8) % 2);
#pragma unroll
      for (int ks = 0; ks < KS; ks++) {
        uint32_t a[4];
        skv_mma::ldsm_x4(a, reinterpret_cast<const uint16_t*>(tile + arow * ROW_BYTES + logits_swizzle(arow, ks * 2 + lane / 16) * 16));
        if constexpr (GUARD) {
          bu[0] = __vimax3_u16x2(bu[0], a[0], a[2]), bs[0] = __vimax3_s16x2(bs[0], a[0], a[2]);
          bu[1] = __vimax3_u16x2(bu[1], a[1], a[3]), bs[1] = __vimax3_s16x2(bs[1], a[1], a[3]);
        }
        float c[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int p = 2; p >= 0; p--) {  // the smallest part first
          const uint2 b = skv_mma::lds_u2(&frag[ks][p][lane]);
          skv_mma::mma_bf16(c, a, b.x, b.y);
        }
#pragma unroll
        for (int i = 0; i < 4; i++) acc[i] = __fadd_rn(acc[i], c[i]);
      }
      float lmax[2] = {0.f, 0.f};  // max |L_i| of the two rows, over the quad of lanes that shares them
#pragma unroll
      for (int r = 0; r < 2 && GUARD; r++) {
        uint32_t big = __vmaxu2(bu[r] & 0x7fff7fffu, bs[r] & 0x7fff7fffu);  // finite bf16 magnitudes order like their bits
        big = __vmaxu2(big, __shfl_xor_sync(0xffffffffu, big, 1));
        big = __vmaxu2(big, __shfl_xor_sync(0xffffffffu, big, 2));
        lmax[r] = __uint_as_float(max(big & 0xffffu, big >> 16) << 16);
      }
      // acc[i]: row m0 + lane / 4 (+ 8 for i >= 2), head (lane % 4) * 2 + i % 2.
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int row = m0 + lane / 4 + (i >= 2 ? 8 : 0), head = (lane % 4) * 2 + i % 2;
        if (row < rn && head < gj) {
          const float s = GUARD && lmax[i / 2] > lim[head] ? NAN : acc[i] * up[head];
          logits[(size_t)(j0 + head) * ld + r0 + row] = s;
          mx[i % 2] = s > mx[i % 2] ? s : mx[i % 2];
        }
      }
    }
    if (++t < per_range) continue;
    t = 0;
    logits_range_max(mx, red, gj, maxes + (size_t)k * g + j0);
    k++;
  }
  skv_mma::cp_async_wait<0>();
  __syncthreads();  // red and the stages are free for the next pass
}
