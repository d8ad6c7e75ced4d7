// One chunk's landmark (the mean of its post-RoPE keys) and how well it represents the chunk (the
// smallest cosine between the mean and a key), shared by the landmarks op (landmarks.cu) and the
// compaction of the fused decode step (decode_layer.cu). Called by a whole block of
// LANDMARK_THREADS threads.
#pragma once
#include "common.cuh"
#include "dtype.cuh"

enum { LANDMARK_THREADS = 128 };

// The cosine between L [d] (shared) and the row k(j), in float64 over the whole block (every thread
// gets it).
template <typename Row>
__device__ __forceinline__ float cosine_f64(const float* L, Row k, int d) {
  __shared__ double red[32];
  double ab = 0.0, aa = 0.0, bb = 0.0;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    const double a = L[j], b = k(j);
    ab += a * b, aa += a * a, bb += b * b;
  }
  const auto plus = [](double x, double y) { return x + y; };
  ab = block_fold(ab, plus, red), aa = block_fold(aa, plus, red), bb = block_fold(bb, plus, red);
  const double denom = sqrt(aa) * sqrt(bb);
  return (float)(ab / (denom > 1e-30 ? denom : 1e-30));
}

// Chunk c of keys (rows c*C.., row stride ldk): store(j, mean_j) for every element; returns the
// min cosine (to every thread) when with_min_cos, else 0. L: shared [d]; red: shared [64].
template <typename Store>
__device__ __forceinline__ float chunk_landmark(const void* keys, int dtype, int64_t ldk, int C, int d, int64_t c,
                                                float* L, float* red, bool with_min_cos, Store store) {
  const int64_t row0 = c * C;
  auto key = [&](int t, int j) { return load_f32(keys, dtype, (size_t)((row0 + t) * ldk + j)); };
  // 1. Mean of the chunk's rows, summed in row order then scaled (as the wasm op does). NOTE: finite
  //    keys near FLT_MAX overflow the f32 sums: such a chunk's mean is taken in float64 instead.
  const float invC = 1.f / (float)C;
  bool bad = false;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    float s = 0.f;
    for (int t = 0; t < C; t++) s += key(t, j);
    L[j] = s * invC;
    bad = bad || !isfinite(L[j]);
  }
  if (__syncthreads_or(bad))
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
      double s = 0.0;
      for (int t = 0; t < C; t++) s += key(t, j);
      L[j] = (float)(s / C);
    }
  float nn = 0.f, unused = 0.f;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    store(j, L[j]);
    nn += L[j] * L[j];
  }
  if (!with_min_cos) return 0.f;
  block_sum2(nn, unused, red);
  const float nl = sqrtf(nn);
  // 2. The smallest cosine between the landmark and a row; where f32 overflows (keys past ~1e19
  //    square to Infinity), that row's cosine in float64.
  float lo = INFINITY;
  for (int t = 0; t < C; t++) {
    float dot = 0.f, kk = 0.f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
      const float k = key(t, j);
      dot += L[j] * k;
      kk += k * k;
    }
    block_sum2(dot, kk, red);
    const float denom = nl * sqrtf(kk);
    float cs = dot / (denom > 1e-30f ? denom : 1e-30f);
    if (!(isfinite(denom) && isfinite(cs))) cs = cosine_f64(L, [&](int j) { return key(t, j); }, d);
    lo = cs < lo ? cs : lo;
  }
  return lo;
}
