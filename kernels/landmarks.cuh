// One chunk's landmark (the mean of its post-RoPE keys) and how well it represents the chunk (the
// smallest cosine between the mean and a key), shared by the landmarks op (landmarks.cu) and the
// compaction of the fused decode step (decode_layer.cu). Called by a whole block of
// LANDMARK_THREADS threads.
#pragma once
#include "common.cuh"
#include "dtype.cuh"

enum { LANDMARK_THREADS = 128 };

// Chunk c of keys (rows c*C.., row stride ldk): store(j, mean_j) for every element; returns the
// min cosine (to every thread) when with_min_cos, else 0. L: shared [d]; red: shared [64].
template <typename Store>
__device__ __forceinline__ float chunk_landmark(const void* keys, int dtype, int64_t ldk, int C, int d, int64_t c,
                                                float* L, float* red, bool with_min_cos, Store store) {
  const int64_t row0 = c * C;
  // 1. Mean of the chunk's rows, summed in row order then scaled (as the wasm op does).
  const float invC = 1.f / (float)C;
  float nn = 0.f, unused = 0.f;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    float s = 0.f;
    for (int t = 0; t < C; t++) s += load_f32(keys, dtype, (size_t)((row0 + t) * ldk + j));
    s *= invC;
    L[j] = s;
    store(j, s);
    nn += s * s;
  }
  if (!with_min_cos) return 0.f;
  block_sum2(nn, unused, red);
  const float nl = sqrtf(nn);
  // 2. The smallest cosine between the landmark and a row.
  float lo = INFINITY;
  for (int t = 0; t < C; t++) {
    float dot = 0.f, kk = 0.f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
      float k = load_f32(keys, dtype, (size_t)((row0 + t) * ldk + j));
      dot += L[j] * k;
      kk += k * k;
    }
    block_sum2(dot, kk, red);
    float denom = nl * sqrtf(kk);
    float cs = dot / (denom > 1e-30f ? denom : 1e-30f);
    lo = cs < lo ? cs : lo;
  }
  return lo;
}
