// Landmark scoring for one kv group: each query head softmaxes its logits over the chunks and a
// chunk scores the best probability any head gives it.
#include <math.h>
#include "dtype.h"
#include "online_softmax.h"
#include "scratch.h"
#include "simd.h"

// NOTE: q·L of finite inputs can pass FLT_MAX (q, L ~ 1e20), or go to -inf for every chunk; the f32
// softmax is then NaN (or 0/0) for the whole head. Such a head is redone with float64 logits: p [n].
static void probabilities_f64(const float* q, int d, float scale, const void* landmarks, int dtype, int n, float* p) {
  auto logit = [&](int c) {
    double acc = 0.0;
    for (int e = 0; e < d; e++) acc += (double)q[e] * elem_f32(landmarks, dtype, (size_t)c * d + e);
    return (double)scale * acc;
  };
  double mx = -INFINITY, sum = 0.0;
  for (int c = 0; c < n; c++) { double x = logit(c); mx = x > mx ? x : mx; }
  for (int c = 0; c < n; c++) sum += exp(logit(c) - mx);
  for (int c = 0; c < n; c++) p[c] = (float)(exp(logit(c) - mx) / sum);
}

SKV_EXPORT void skv_score_chunks(const float* q, int g, int d, float scale,
                                 const void* landmarks, int dtype, int n,
                                 float* scores, float* work) {
  if (n <= 0) return;
  Scratch<float> own(work ? 0 : (uint64_t)g * n);
  float* logits = work ? work : own.p;  // [g x n]
  Scratch<float> row(d);                // [d] one landmark in f32
  // 1. Logits: each landmark row is read (and converted) once for all g heads.
  for (int c = 0; c < n; c++) {
    const float* L = (const float*)dtype_at(landmarks, dtype, (size_t)c * d);
    if (dtype != SKV_F32) { load_f32(L, dtype, d, row); L = row; }
    for (int j = 0; j < g; j++) logits[(size_t)j * n + c] = scale * vdot(q + (size_t)j * d, L, d);
  }
  // 2. Softmax per head (max subtracted for stability), then the max over heads.
  for (int c = 0; c < n; c++) scores[c] = 0.f;
  for (int j = 0; j < g; j++) {
    float* lj = logits + (size_t)j * n;
    float mx = -INFINITY;
    double sum = 0;  // n may be 100K terms
    for (int c = 0; c < n; c++) mx = lj[c] > mx ? lj[c] : mx;
    for (int c = 0; c < n; c += 256) sum += vexp_shifted(lj + c, n - c < 256 ? n - c : 256, mx);
    if (!(isfinite(mx) && isfinite(sum))) {  // finite inputs past f32: the head again in float64
      probabilities_f64(q + (size_t)j * d, d, scale, landmarks, dtype, n, lj);
      sum = 1.0;
    }
    float inv = (float)(1.0 / sum);
    for (int c = 0; c < n; c++) scores[c] = lj[c] * inv > scores[c] ? lj[c] * inv : scores[c];
  }
}
