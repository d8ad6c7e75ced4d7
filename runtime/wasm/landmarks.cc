// Chunk landmarks: the mean of each chunk's post-RoPE keys, and how well the mean represents the
// chunk (the smallest cosine between the mean and a key), which picks the outlier chunks.
#include <math.h>
#include "dtype.h"
#include "online_softmax.h"
#include "scratch.h"
#include "simd.h"

// NOTE: finite keys near FLT_MAX overflow the f32 sum of a chunk, and keys past ~1e19 the f32 squared
// norms (|k|^2 = inf, so every cosine 0 or NaN); those chunks are redone in float64, others keep their bits.
static void mean_f64(const float* rows, int C, int d, float* L) {
  for (int j = 0; j < d; j++) {
    double s = 0.0;
    for (int t = 0; t < C; t++) s += rows[(size_t)t * d + j];
    L[j] = (float)(s / C);
  }
}

static float cosine_f64(const float* a, const float* b, int d) {
  double ab = 0.0, aa = 0.0, bb = 0.0;
  for (int j = 0; j < d; j++) { ab += (double)a[j] * b[j]; aa += (double)a[j] * a[j]; bb += (double)b[j] * b[j]; }
  const double denom = sqrt(aa) * sqrt(bb);
  return (float)(ab / (denom > 1e-30 ? denom : 1e-30));
}

SKV_EXPORT void skv_landmarks(const void* keys, int dtype, int ldk, int n_chunks, int C, int d,
                              float* landmarks, float* min_cos) {
  if (n_chunks <= 0 || C <= 0 || d <= 0) return;
  Scratch<float> rows((uint64_t)C * d);  // [C x d] one chunk in f32
  for (int c = 0; c < n_chunks; c++) {
    float* L = landmarks + (size_t)c * d;  // [d]
    for (int t = 0; t < C; t++)
      load_f32(dtype_at(keys, dtype, ((size_t)c * C + t) * ldk), dtype, d, rows + (size_t)t * d);
    for (int j = 0; j < d; j++) L[j] = 0.f;
    for (int t = 0; t < C; t++) vaxpy(1.f, rows + (size_t)t * d, L, d);
    vscale(1.f / (float)C, L, d);
    if (!all_finite(L, d)) mean_f64(rows, C, d, L);
    float nl = sqrtf(vdot(L, L, d)), lo = INFINITY;
    for (int t = 0; t < C; t++) {
      const float* k = rows + (size_t)t * d;
      float denom = nl * sqrtf(vdot(k, k, d));
      float cs = vdot(L, k, d) / (denom > 1e-30f ? denom : 1e-30f);
      if (!(isfinite(denom) && isfinite(cs))) cs = cosine_f64(L, k, d);
      lo = cs < lo ? cs : lo;
    }
    min_cos[c] = lo;
  }
}
