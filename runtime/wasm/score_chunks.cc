// Landmark scoring for one kv group: each query head softmaxes its logits over the chunks and a
// chunk scores the best probability any head gives it.
#include <math.h>
#include "dtype.h"
#include "scratch.h"
#include "simd.h"

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
    float inv = (float)(1.0 / sum);
    for (int c = 0; c < n; c++) scores[c] = lj[c] * inv > scores[c] ? lj[c] * inv : scores[c];
  }
}
