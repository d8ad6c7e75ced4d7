// Landmark logits, shared by the scoring op (score_chunks.cu) and the fused decode step
// (decode_layer.cu) so that both give the same bits: logits[j * ld + c] = scale * q_j . L_c.
// bf16 landmarks of 64 or 128 dims go to the tensor cores (logits_mma.cuh). Otherwise eight lanes take one landmark row, each a contiguous d/8 slice with its queries' slices in
// registers (16-byte loads of 16-bit rows where the row allows), summed in slice order and then
// over the eight lanes by shuffles. A block takes a contiguous range of landmarks and also leaves
// each head's max over it (the softmax then needs one pass less).
#pragma once
#include "common.cuh"
#include "dtype.cuh"
#include "logits_mma.cuh"
#include "mma.cuh"

enum {
  LOGIT_LANES = 8,
  LOGIT_THREADS = 256,
  LOGIT_GROUPS = LOGIT_THREADS / LOGIT_LANES,  // landmarks in flight per block
  LOGIT_HEADS = 4,                             // query heads per pass over the landmarks
  LOGIT_UNROLL = 1,                            // landmarks per lane per step (staged rows need no more)
  LOGIT_TILE_BYTES = 32 * 1024,                // landmark rows per cp.async stage (128 of bf16 x 128)
  LOGIT_STAGES = 3,
  LOGIT_SMEM = LOGIT_TILE_BYTES * LOGIT_STAGES,  // dynamic shared memory of a logits block
  LOGIT_MAX_BLOCKS = 64,                       // blocks per kv head (partial maxima per head)
};

// Blocks per kv head for n landmarks: a few hundred landmarks each, at most LOGIT_MAX_BLOCKS.
__host__ __device__ __forceinline__ int logit_blocks(int64_t n) {
  const int64_t b = (n + 511) / 512;
  return (int)(b < 1 ? 1 : b > LOGIT_MAX_BLOCKS ? LOGIT_MAX_BLOCKS : b);
}

// Landmarks [c0, c1) for query heads [j0, j0 + gj): DL elements per lane (a slice in registers,
// for d 64 and 128; 0 = lanes stride over d instead, for other widths). mx: this thread's running
// max per head. With `stage` (shared, LOGIT_STAGES x LOGIT_TILE_BYTES; rows of a multiple of 16
// bytes), the rows stream through it by cp.async, LOGIT_STAGES - 1 tiles ahead of the arithmetic:
// read straight from global memory, the scan was latency-bound (a few requests per lane in flight).
template <int DL>
__device__ __forceinline__ void logits_group(const float* q, int j0, int gj, int d, float scale, const void* landmarks,
                                             int dtype, int64_t c0, int64_t c1, float* logits, int64_t ld, float* mx,
                                             char* stage) {
  const int sub = threadIdx.x % LOGIT_LANES, grp = threadIdx.x / LOGIT_LANES, e0 = sub * DL;
  float qr[LOGIT_HEADS][DL > 0 ? DL : 1];
#pragma unroll
  for (int j = 0; j < LOGIT_HEADS; j++)
#pragma unroll
    for (int e = 0; e < DL; e++) qr[j][e] = j < gj ? q[(size_t)(j0 + j) * d + e0 + e] : 0.f;
  // Rows [r0, r1) of src, whose first row is landmark `first`.
  auto rows = [&](const void* src, int64_t first, int64_t r0, int64_t r1) {
    const bool vec = DL % 8 == 0 && dtype != SKV_F32 && reinterpret_cast<uintptr_t>(src) % 16 == 0;
    // NOTE: every lane of a warp runs the same trip count (the shuffles need them all).
    for (int64_t base = r0; base < r1; base += LOGIT_GROUPS * LOGIT_UNROLL) {
      // The 16-byte words of LOGIT_UNROLL landmarks are requested before any is used.
      uint4 raw[LOGIT_UNROLL][DL >= 8 ? DL / 8 : 1];
      auto row_of = [&](int u) {
        const int64_t c = base + u * LOGIT_GROUPS + grp;
        return (size_t)((c < r1 ? c : r0) - first) * d;
      };
      if (vec)
#pragma unroll
        for (int u = 0; u < LOGIT_UNROLL; u++)
#pragma unroll
          for (int w = 0; w < DL / 8; w++) raw[u][w] = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(src) + row_of(u) + e0 + 8 * w);
#pragma unroll
      for (int u = 0; u < LOGIT_UNROLL; u++) {
        const int64_t c = base + u * LOGIT_GROUPS + grp;
        const bool live = c < r1;
        const size_t row = row_of(u);
        float acc[LOGIT_HEADS] = {};
        if (DL == 0) {
          for (int e = sub; e < d; e += LOGIT_LANES) {
            const float x = load_f32(src, dtype, row + e);
#pragma unroll
            for (int j = 0; j < LOGIT_HEADS; j++)
              if (j < gj) acc[j] = fmaf(q[(size_t)(j0 + j) * d + e], x, acc[j]);
          }
        } else if (vec) {
#pragma unroll
          for (int e = 0; e < DL; e += 8) {
            float x[8];
            unpack8_16bit(raw[u][e / 8], dtype, x);
#pragma unroll
            for (int i = 0; i < 8; i++)
#pragma unroll
              for (int j = 0; j < LOGIT_HEADS; j++) acc[j] = fmaf(qr[j][e + i], x[i], acc[j]);
          }
        } else {
#pragma unroll
          for (int e = 0; e < DL; e++) {
            const float x = load_f32(src, dtype, row + e0 + e);
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
  };
  if (!stage) {
    rows(landmarks, 0, c0, c1);
    return;
  }
  const size_t row_bytes = (size_t)d * skv_dtype_size(dtype);
  const int64_t per = LOGIT_TILE_BYTES / row_bytes, tiles = (c1 - c0 + per - 1) / per;
  auto issue = [&](int64_t t) {  // tile t into its stage; a group is committed even when empty, so the waits count right
    if (t < tiles) {
      const int64_t r0 = c0 + t * per, n = min(per, c1 - r0);
      const char* src = static_cast<const char*>(landmarks) + r0 * row_bytes;
      char* dst = stage + (t % LOGIT_STAGES) * LOGIT_TILE_BYTES;
      for (size_t w = threadIdx.x; w < n * row_bytes / 16; w += blockDim.x)
        skv_mma::cp_async16(reinterpret_cast<uint16_t*>(dst + w * 16), src + w * 16, 16);
    }
    skv_mma::cp_async_commit();
  };
  for (int t = 0; t < LOGIT_STAGES - 1; t++) issue(t);
  for (int64_t t = 0; t < tiles; t++) {
    skv_mma::cp_async_wait<LOGIT_STAGES - 2>();
    __syncthreads();  // tile t is in for every thread, and tile t - 1's stage is free
    issue(t + LOGIT_STAGES - 1);
    const int64_t r0 = c0 + t * per;
    rows(stage + (t % LOGIT_STAGES) * LOGIT_TILE_BYTES, r0, r0, min(r0 + per, c1));
  }
  skv_mma::cp_async_wait<0>();
  __syncthreads();  // the stages are free for the next group of heads
}

// Whether landmark_logits can stream the rows through shared memory.
__device__ __forceinline__ bool logits_staged(const void* landmarks, int d, int dtype) {
  const size_t row_bytes = (size_t)d * skv_dtype_size(dtype);
  return row_bytes % 16 == 0 && row_bytes <= LOGIT_TILE_BYTES && reinterpret_cast<uintptr_t>(landmarks) % 16 == 0;
}

// landmark_logits' first tiles where it will take the tensor cores for these landmarks (it then
// also needs the queries to be small), requested before the queries exist: true when it did.
__device__ __forceinline__ bool landmark_logits_prefetch(const void* landmarks, int d, int dtype, int64_t n, int nb, int b0,
                                                         int b1, char* stage) {
  if (!logits_staged(landmarks, d, dtype) || !logits_mma_ok(dtype, d)) return false;
  if (d == 128) logits_mma_prefetch<128, LOGIT_STAGES, LOGIT_TILE_BYTES>(landmarks, n, nb, b0, b1, stage);
  else logits_mma_prefetch<64, LOGIT_STAGES, LOGIT_TILE_BYTES>(landmarks, n, nb, b0, b1, stage);
  return true;
}

// Ranges [b0, b1) of the partition of n landmarks [n x d] (dtype) into nb (logit_range) against
// g query heads q [g x d] (f32, global): logits into logits[j * ld + c]; each range's max per head
// (NaN-ignoring, -inf when empty) into maxes[(b - b0) * g + j]. Called by a whole block of
// LOGIT_THREADS threads; red: shared [LOGIT_GROUPS * LOGIT_HEADS]; stage: dynamic shared memory of
// LOGIT_SMEM bytes; prefetched: landmark_logits_prefetch returned true for these arguments. GUARD:
// the tensor cores' logits check each landmark row's magnitude; bound (0: none): max |L_i| over the
// landmarks, known to the caller, checked once instead (logits_mma.cuh).
template <bool GUARD>
__device__ __forceinline__ void landmark_logits(const float* q, int g, int d, float scale, const void* landmarks,
                                                int dtype, int64_t n, int nb, int b0, int b1, float* logits, int64_t ld,
                                                float* maxes, float* red, char* stage, bool prefetched = false, float bound = 0.f) {
  const int dl = d % LOGIT_LANES == 0 ? d / LOGIT_LANES : 0;
  if (!logits_staged(landmarks, d, dtype)) stage = nullptr;
  // The tensor cores, where the queries split into bf16 parts safely (huge or non-finite values
  // take the SIMT path, which keeps their inf and NaN semantics).
  bool small = true;
  for (int i = threadIdx.x; i < g * d; i += blockDim.x) small = small && fabsf(q[i]) < 1e30f;
  if (__syncthreads_and(small) && stage && logits_mma_ok(dtype, d)) {
    for (int j0 = 0; j0 < g; j0 += LOGIT_MMA_HEADS) {
      const int gj = min(LOGIT_MMA_HEADS, g - j0);
      const bool first = prefetched && j0 == 0;
      if (d == 128) logits_group_mma<128, LOGIT_STAGES, LOGIT_TILE_BYTES, GUARD>(q, j0, gj, scale, landmarks, n, nb, b0, b1, logits, ld, maxes, g, red, stage, first, bound);
      else logits_group_mma<64, LOGIT_STAGES, LOGIT_TILE_BYTES, GUARD>(q, j0, gj, scale, landmarks, n, nb, b0, b1, logits, ld, maxes, g, red, stage, first, bound);
    }
    return;
  }
  if (prefetched) {  // the SIMT path stages its rows its own way: the early tiles land first
    skv_mma::cp_async_wait<0>();
    __syncthreads();
  }
  for (int b = b0; b < b1; b++) {
    int64_t c0, c1;
    logit_range(n, b, nb, &c0, &c1);
    for (int j0 = 0; j0 < g; j0 += LOGIT_HEADS) {
      const int gj = min(LOGIT_HEADS, g - j0);
      float mx[LOGIT_HEADS];
#pragma unroll
      for (int j = 0; j < LOGIT_HEADS; j++) mx[j] = -INFINITY;
      switch (dl) {
        case 8: logits_group<8>(q, j0, gj, d, scale, landmarks, dtype, c0, c1, logits, ld, mx, stage); break;
        case 16: logits_group<16>(q, j0, gj, d, scale, landmarks, dtype, c0, c1, logits, ld, mx, stage); break;
        default: logits_group<0>(q, j0, gj, d, scale, landmarks, dtype, c0, c1, logits, ld, mx, stage); break;
      }
      const int sub = threadIdx.x % LOGIT_LANES, grp = threadIdx.x / LOGIT_LANES;
      if (sub == 0)
#pragma unroll
        for (int j = 0; j < LOGIT_HEADS; j++) red[grp * LOGIT_HEADS + j] = mx[j];
      __syncthreads();
      if (threadIdx.x < gj) {
        float m = -INFINITY;
        for (int r = 0; r < LOGIT_GROUPS; r++) m = red[r * LOGIT_HEADS + threadIdx.x] > m ? red[r * LOGIT_HEADS + threadIdx.x] : m;
        maxes[(size_t)(b - b0) * g + j0 + threadIdx.x] = m;
      }
      __syncthreads();
    }
  }
}
