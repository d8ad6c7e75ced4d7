// Landmark logits, shared by the scoring op (score_chunks.cu) and the fused decode step
// (decode_layer.cu) so that both give the same bits: logits[j * ld + c] = scale * q_j . L_c.
// Eight lanes take one landmark row, each a contiguous d/8 slice (16-byte loads where the row
// allows), summed in slice order and then over the eight lanes by shuffles.
#pragma once
#include "common.cuh"
#include "dtype.cuh"

enum { LOGIT_LANES = 8, LOGIT_THREADS = 256, LOGIT_HEADS = 8 };

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

// This block's share of the logits of n landmarks [n x d] (dtype) for g query heads qs [g x d]
// (f32, shared memory): landmark c goes to the LOGIT_LANES lanes (threadIdx.x / 8) of unit
// c / (LOGIT_THREADS / 8); the block takes units first, first + stride, ...
__device__ __forceinline__ void landmark_logits(const float* qs, int g, int d, float scale, const void* landmarks,
                                                int dtype, int n, float* logits, int64_t ld, int64_t first,
                                                int64_t stride) {
  const int per_unit = blockDim.x / LOGIT_LANES, sub = threadIdx.x % LOGIT_LANES;
  const int dl = d / LOGIT_LANES;
  const bool even = d % LOGIT_LANES == 0;
  const bool vec = even && dtype != SKV_F32 && dl % 8 == 0 && reinterpret_cast<uintptr_t>(landmarks) % 16 == 0;
  for (int64_t unit = first;; unit += stride) {
    const int64_t c = unit * per_unit + threadIdx.x / LOGIT_LANES;
    if (unit * per_unit >= n) break;
    const bool live = c < n;  // NOTE: every lane stays for the shuffles
    const size_t row = (size_t)(live ? c : 0) * d;
    for (int j0 = 0; j0 < g; j0 += LOGIT_HEADS) {
      const int gj = min(LOGIT_HEADS, g - j0);
      float acc[LOGIT_HEADS] = {};
      if (even) {
        const int e0 = sub * dl;
        if (vec) {
          for (int e = 0; e < dl; e += 8) {
            float x[8];
            load8_16bit(static_cast<const char*>(landmarks) + row * 2, dtype, e0 + e, x);
#pragma unroll
            for (int i = 0; i < 8; i++)
#pragma unroll
              for (int j = 0; j < LOGIT_HEADS; j++)
                if (j < gj) acc[j] = fmaf(qs[(j0 + j) * d + e0 + e + i], x[i], acc[j]);
          }
        } else {
          for (int e = 0; e < dl; e++) {
            const float x = load_f32(landmarks, dtype, row + e0 + e);
#pragma unroll
            for (int j = 0; j < LOGIT_HEADS; j++)
              if (j < gj) acc[j] = fmaf(qs[(j0 + j) * d + e0 + e], x, acc[j]);
          }
        }
      } else {  // d not a multiple of 8: lanes stride over d
        for (int e = sub; e < d; e += LOGIT_LANES) {
          const float x = load_f32(landmarks, dtype, row + e);
#pragma unroll
          for (int j = 0; j < LOGIT_HEADS; j++)
            if (j < gj) acc[j] = fmaf(qs[(j0 + j) * d + e], x, acc[j]);
        }
      }
#pragma unroll
      for (int j = 0; j < LOGIT_HEADS; j++) {
        float s = acc[j];
        for (int o = LOGIT_LANES / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (live && sub == 0 && j < gj) logits[(size_t)(j0 + j) * ld + c] = scale * s;
      }
    }
  }
}
