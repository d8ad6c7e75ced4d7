// Decode attention: online softmax (running max, rescaled sums) over blocks of keys for the few
// query vectors of one step (sparse_attention, skv_decode_layer). Prefill, with many queries per
// key, tiles both sides and runs its products through the GEMM kernel instead (causal_attention.cc).
#pragma once
#include <math.h>
#include "dtype.h"
#include "scratch.h"
#include "simd.h"

enum { ATTN_BLOCK = 64 };  // keys per block: logits of a block are computed before any update

// The online softmax's step to a larger running max mx: the query's accumulator acc [d] and its sum
// l rescale by exp(m - mx) (0 while m was -inf), then m = mx. Decode and prefill attention share it.
static inline void softmax_raise(float* m, float* l, float* acc, int d, float mx) {
  const float f = expf(*m - mx);
  vscale(f, acc, d);
  *l *= f;
  *m = mx;
}

// Running state of nq query vectors over one stream of keys. Scratch for one call.
struct OnlineSoftmax {
  int nq, d;
  Scratch<float> q;       // [nq x d] queries, pre-multiplied by the scale
  Scratch<float> logits;  // [nq x ATTN_BLOCK] logits, then probabilities
  Scratch<float> m, l;    // [nq] running max and sum of exp(logit - m)
  Scratch<float> acc;     // [nq x d] running sum of p * v
  Scratch<float> kv;      // [2 x ATTN_BLOCK x d] a block of keys and values converted to f32
  OnlineSoftmax(int nq_, int d_)
      : nq(nq_), d(d_), q((uint64_t)nq_ * d_), logits((uint64_t)nq_ * ATTN_BLOCK), m(nq_), l(nq_),
        acc((uint64_t)nq_ * d_), kv((uint64_t)2 * ATTN_BLOCK * d_) {}

  void reset() {
    for (int j = 0; j < nq; j++) { m[j] = -INFINITY; l[j] = 0.f; }
    for (size_t i = 0; i < (size_t)nq * d; i++) acc[i] = 0.f;
  }

  // Folds n <= ATTN_BLOCK rows of keys and values (row stride ld, dtype) into the state.
  void block(const void* k, const void* v, int ld, int dtype, int n) {
    const float *kf = (const float*)k, *vf = (const float*)v;
    int kld = ld;
    if (dtype != SKV_F32) {  // convert once, then every query reads f32 rows from L1
      for (int t = 0; t < n; t++) {
        load_f32(dtype_at(k, dtype, (size_t)t * ld), dtype, d, kv + (size_t)t * d);
        load_f32(dtype_at(v, dtype, (size_t)t * ld), dtype, d, kv + (size_t)(ATTN_BLOCK + t) * d);
      }
      kf = kv; vf = kv + (size_t)ATTN_BLOCK * d; kld = d;
    }
    // 1. Logits of the whole block; each key row is read once for all queries.
    for (int t = 0; t < n; t++)
      for (int j = 0; j < nq; j++)
        logits[j * ATTN_BLOCK + t] = vdot(q + (size_t)j * d, kf + (size_t)t * kld, d);
    // 2. New running max; rescale what was accumulated under the old one.
    for (int j = 0; j < nq; j++) {
      float* lj = logits + j * ATTN_BLOCK;
      float mx = m[j];
      for (int t = 0; t < n; t++) mx = lj[t] > mx ? lj[t] : mx;
      if (mx == -INFINITY) continue;  // only -inf logits so far
      if (mx > m[j]) softmax_raise(&m[j], &l[j], acc + (size_t)j * d, d, mx);
      l[j] += vexp_shifted(lj, n, mx);
    }
    // 3. Values: each value row is read once for all queries.
    for (int t = 0; t < n; t++)
      for (int j = 0; j < nq; j++) {
        float p = logits[j * ATTN_BLOCK + t];
        if (p != 0.f) vaxpy(p, vf + (size_t)t * kld, acc + (size_t)j * d, d);
      }
  }

  // out_j = acc_j / l_j; a query that saw no key gets zeros.
  void finish(int j, float* out) const {
    float inv = l[j] > 0.f ? 1.f / l[j] : 0.f;
    for (int i = 0; i < d; i++) out[i] = acc[(size_t)j * d + i] * inv;
  }
};

// ---- the float64 path: inputs finite, f32 arithmetic not ----
// NOTE: finite inputs can still overflow the f32 path: scale q·k past FLT_MAX (q, k ~ 1e20), or the
// unnormalized sum of p v (values near FLT_MAX over a few tokens); the result is then NaN or Inf, or
// zeros when every logit went to -inf. Such a query is redone here, once, from the same keys: logits
// in float64 (|scale q·k| <= 100 * 1024 * FLT_MAX^2 fits), probabilities normalized before they weigh
// the values, so no partial sum passes max|v|. Three passes over the keys and no scratch; a query whose
// f32 result is finite never comes here, so its bits are those of the fast path.

// scale · q·k in float64, k row `t` of a segment.
static inline double logit_f64(const float* q, double scale, const skv_segment& s, int dtype, int t, int d) {
  double acc = 0.0;
  for (int e = 0; e < d; e++) acc += (double)q[e] * elem_f32(s.k, dtype, (size_t)t * s.ld + e);
  return scale * acc;
}

// out [d] = softmax(scale q Kᵀ) V over the segments' rows, in float64 logits; q is not yet scaled.
static inline void attend_f64(const float* q, int d, float scale, const skv_segment* segs, int nseg, int dtype, float* out) {
  double mx = -INFINITY, sum = 0.0;
  for (int s = 0; s < nseg; s++)  // 1. max logit
    for (int t = 0; t < segs[s].n; t++) { double x = logit_f64(q, scale, segs[s], dtype, t, d); mx = x > mx ? x : mx; }
  for (int s = 0; s < nseg; s++)  // 2. sum of exp(logit - max)
    for (int t = 0; t < segs[s].n; t++) sum += exp(logit_f64(q, scale, segs[s], dtype, t, d) - mx);
  for (int i = 0; i < d; i++) out[i] = 0.f;
  for (int s = 0; s < nseg; s++)  // 3. out = sum of p v, p normalized
    for (int t = 0; t < segs[s].n; t++) {
      const float p = (float)(exp(logit_f64(q, scale, segs[s], dtype, t, d) - mx) / sum);
      if (p == 0.f) continue;
      for (int i = 0; i < d; i++) out[i] += p * elem_f32(segs[s].v, dtype, (size_t)t * segs[s].ld + i);
    }
}

// Whether x[0:n] are all finite.
static inline bool all_finite(const float* x, int n) {
  bool ok = true;
  for (int i = 0; i < n; i++) ok = ok && isfinite(x[i]);
  return ok;
}

// Whether a query's f32 result stands: a finite running max and sum, and finite outputs [d].
static inline bool softmax_finite(float m, float l, const float* out, int d) {
  return isfinite(m) && isfinite(l) && l > 0.f && all_finite(out, d);
}

// Scratch bytes of OnlineSoftmax(nq, d), its members in order (skv_decode_layer reserves them).
static inline uint64_t online_softmax_bytes(uint64_t nq, uint64_t d) {
  return scratch_bytes<float>(size_mul(nq, d)) + scratch_bytes<float>(size_mul(nq, ATTN_BLOCK)) +
         2 * scratch_bytes<float>(nq) + scratch_bytes<float>(size_mul(nq, d)) + scratch_bytes<float>(size_mul(2 * ATTN_BLOCK, d));
}
