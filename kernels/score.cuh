// Landmark logits, shared by the scoring op (score_chunks.cu) and the fused decode step
// (decode_layer.cu) so that both give the same bits: logits[j * ld + c] = scale * q_j . L_c.
// Eight lanes take one landmark row, each a contiguous d/8 slice with its queries' slices in
// registers (16-byte loads of 16-bit rows where the row allows), summed in slice order and then
// over the eight lanes by shuffles. A block takes a contiguous range of landmarks and also leaves
// each head's max over it (the softmax then needs one pass less).
#pragma once
#include "common.cuh"
#include "dtype.cuh"

enum {
  LOGIT_LANES = 8,
  LOGIT_THREADS = 256,
  LOGIT_GROUPS = LOGIT_THREADS / LOGIT_LANES,  // landmarks in flight per block
  LOGIT_HEADS = 4,                             // query heads per pass over the landmarks
  LOGIT_MAX_BLOCKS = 64,                       // blocks per kv head (partial maxima per head)
};

// Blocks per kv head for n landmarks: a few hundred landmarks each, at most LOGIT_MAX_BLOCKS.
__host__ __device__ __forceinline__ int logit_blocks(int64_t n) {
  const int64_t b = (n + 1023) / 1024;
  return (int)(b < 1 ? 1 : b > LOGIT_MAX_BLOCKS ? LOGIT_MAX_BLOCKS : b);
}

// Elements [e0, e0 + 8) of a 16-bit row as f32 (one 16-byte load).
__device__ __forceinline__ void load8_16bit(const void* row, int dtype, int e0, float* x) {
  const uint4 w = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(row) + e0);
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const uint16_t lo = (uint16_t)(words[i] & 0xffffu), hi = (uint16_t)(words[i] >> 16);
    x[2 * i] = dtype == SKV_BF16 ? bf16_to_f32(lo) : f16_to_f32(lo);
    x[2 * i + 1] = dtype == SKV_BF16 ? bf16_to_f32(hi) : f16_to_f32(hi);
  }
}

// One pass over landmarks [c0, c1) for query heads [j0, j0 + gj): DL elements per lane (a slice in
// registers, for d 64 and 128; 0 = lanes stride over d instead, for other widths). mx: this thread's running max per head.
template <int DL>
__device__ __forceinline__ void logits_pass(const float* q, int j0, int gj, int d, float scale, const void* landmarks,
                                            int dtype, int64_t c0, int64_t c1, float* logits, int64_t ld, float* mx) {
  const int sub = threadIdx.x % LOGIT_LANES, grp = threadIdx.x / LOGIT_LANES, e0 = sub * DL;
  const bool vec = DL % 8 == 0 && dtype != SKV_F32 && reinterpret_cast<uintptr_t>(landmarks) % 16 == 0;
  float qr[LOGIT_HEADS][DL > 0 ? DL : 1];
#pragma unroll
  for (int j = 0; j < LOGIT_HEADS; j++)
#pragma unroll
    for (int e = 0; e < DL; e++) qr[j][e] = j < gj ? q[(size_t)(j0 + j) * d + e0 + e] : 0.f;
  // NOTE: every lane of a warp runs the same trip count (the shuffles need them all).
  for (int64_t base = c0; base < c1; base += LOGIT_GROUPS) {
    const int64_t c = base + grp;
    const bool live = c < c1;
    const size_t row = (size_t)(live ? c : c0) * d;
    float acc[LOGIT_HEADS] = {};
    if (DL == 0) {
      for (int e = sub; e < d; e += LOGIT_LANES) {
        const float x = load_f32(landmarks, dtype, row + e);
#pragma unroll
        for (int j = 0; j < LOGIT_HEADS; j++)
          if (j < gj) acc[j] = fmaf(q[(size_t)(j0 + j) * d + e], x, acc[j]);
      }
    } else if (vec) {
#pragma unroll
      for (int e = 0; e < DL; e += 8) {
        float x[8];
        load8_16bit(static_cast<const char*>(landmarks) + row * 2, dtype, e0 + e, x);
#pragma unroll
        for (int i = 0; i < 8; i++)
#pragma unroll
          for (int j = 0; j < LOGIT_HEADS; j++) acc[j] = fmaf(qr[j][e + i], x[i], acc[j]);
      }
    } else {
#pragma unroll
      for (int e = 0; e < DL; e++) {
        const float x = load_f32(landmarks, dtype, row + e0 + e);
#pragma unroll
        for (int j = 0; j < LOGIT_HEADS; j++) acc[j] = fmaf(qr[j][e], x, acc[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < LOGIT_HEADS; j++) {
      float s = acc[j];
#pragma unroll
      for (int o = LOGIT_LANES / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      s *= scale;
      if (live && j < gj) {
        if (sub == 0) logits[(size_t)(j0 + j) * ld + c] = s;
        mx[j] = s > mx[j] ? s : mx[j];
      }
    }
  }
}

// Landmarks [c0, c1) of [n x d] (dtype) against g query heads q [g x d] (f32, global): logits into
// logits[j * ld + c]; the block's max per head (NaN-ignoring, -inf when empty) into maxes[j].
// Called by a whole block of LOGIT_THREADS threads; red: shared [LOGIT_GROUPS * LOGIT_HEADS].
__device__ __forceinline__ void landmark_logits(const float* q, int g, int d, float scale, const void* landmarks,
                                                int dtype, int64_t c0, int64_t c1, float* logits, int64_t ld,
                                                float* maxes, float* red) {
  const int dl = d % LOGIT_LANES == 0 ? d / LOGIT_LANES : 0;
  for (int j0 = 0; j0 < g; j0 += LOGIT_HEADS) {
    const int gj = min(LOGIT_HEADS, g - j0);
    float mx[LOGIT_HEADS];
#pragma unroll
    for (int j = 0; j < LOGIT_HEADS; j++) mx[j] = -INFINITY;
    switch (dl) {
      case 8: logits_pass<8>(q, j0, gj, d, scale, landmarks, dtype, c0, c1, logits, ld, mx); break;
      case 16: logits_pass<16>(q, j0, gj, d, scale, landmarks, dtype, c0, c1, logits, ld, mx); break;
      default: logits_pass<0>(q, j0, gj, d, scale, landmarks, dtype, c0, c1, logits, ld, mx); break;
    }
    const int sub = threadIdx.x % LOGIT_LANES, grp = threadIdx.x / LOGIT_LANES;
    if (sub == 0)
#pragma unroll
      for (int j = 0; j < LOGIT_HEADS; j++) red[grp * LOGIT_HEADS + j] = mx[j];
    __syncthreads();
    if (threadIdx.x < gj) {
      float m = -INFINITY;
      for (int r = 0; r < LOGIT_GROUPS; r++) m = red[r * LOGIT_HEADS + threadIdx.x] > m ? red[r * LOGIT_HEADS + threadIdx.x] : m;
      maxes[j0 + threadIdx.x] = m;
    }
    __syncthreads();
  }
}

// Landmark range [c0, c1) of block b of nb over n landmarks.
__host__ __device__ __forceinline__ void logit_range(int64_t n, int b, int nb, int64_t* c0, int64_t* c1) {
  const int64_t per = (n + nb - 1) / nb;
  *c0 = (int64_t)b * per < n ? (int64_t)b * per : n;
  *c1 = *c0 + per < n ? *c0 + per : n;
}
