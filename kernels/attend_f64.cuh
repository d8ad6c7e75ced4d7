// The float64 path of attention, after runtime/wasm/online_softmax.h (attend_f64): finite inputs can
// still overflow the f32 kernels (scale q·k past FLT_MAX with q, k ~ 1e20, scale x q past it, or the
// unnormalized sum of p v of values near FLT_MAX), whose result is then NaN or Inf, or all-zero
// weights. Such a query vector is redone here by one warp from the same keys and values: logits in
// float64 (|scale q·k| <= 100 * 1024 * FLT_MAX^2 fits), the probabilities normalized before they
// weigh the values. The kernels call it only for a vector whose f32 result fails attn_result_ok, so
// every other vector keeps the fast path's bits. NOTE: one key at a time (a warp sum per logit),
// slow (~1 ms per 10K keys at d 128, estimated), which only inputs no model produces pay.
#pragma once
#include "common.cuh"
#include "dtype.cuh"
#include "launchers.h"

// Whether a query vector's f32 softmax stands: a finite max and a positive finite sum. Every vector
// that reaches it sees at least one key, so a zero sum means every logit overflowed to -inf.
__device__ __forceinline__ bool attn_result_ok(float m, float l) { return isfinite(m) && isfinite(l) && l > 0.f; }

// Key `key` of a task's segments: the rows of keys and values holding it (sparse_attention.cu's
// kernels and attend_f64).
__device__ __forceinline__ void locate(const SkvSegment* segs, int nseg, int64_t key, const char** k, const char** v,
                                       size_t esize) {
  int64_t base = 0;
  int s = 0;
  while (s < nseg - 1 && key >= base + segs[s].n) base += segs[s++].n;
  const int64_t off = (key - base) * segs[s].ld * (int64_t)esize;
  *k = reinterpret_cast<const char*>(segs[s].k) + off;
  *v = reinterpret_cast<const char*>(segs[s].v) + off;
}

// out[out0, out0 + d) (out_dtype) = softmax(scale q K^T) V over the `total` rows of the segments,
// q [d] f32, not yet scaled. Called by every lane of one warp, with the same arguments.
static __device__ __forceinline__ void attend_f64(const float* q, int d, float scale, const SkvSegment* segs, int nseg, int64_t total,
                                               int kv_dtype, void* out, int out_dtype, size_t out0) {
  const int lane = threadIdx.x % 32;
  const size_t esize = kv_dtype == SKV_F32 ? 4 : 2;
  // NOTE: read from L2 (load_f32_cg): a row may have been written by another block of the launch
  // after this SM's L1 last saw it.
  auto logit = [&](int64_t key) {
    const char *k, *v;
    locate(segs, nseg, key, &k, &v, esize);
    double acc = 0.0;
    for (int e = lane; e < d; e += 32) acc = fma((double)q[e], (double)load_f32_cg(k, kv_dtype, e), acc);
    // NOTE: rounded here (__dmul_rn): contracted into the later `logit - mx` (an fma), the max's own
    // logit came out ~1e24 from mx at logits of ~1e40, and exp of it Infinity (an H100 gave NaN outputs).
    return __dmul_rn((double)scale, warp_sum(acc));
  };
  // 1. The max logit and the sum of exp(logit - max), online.
  double mx = -INFINITY, sum = 0.0;
  for (int64_t key = 0; key < total; key++) {
    const double x = logit(key);
    if (x > mx) {
      sum = sum * exp(mx - x) + 1.0;
      mx = x;
    } else {
      sum += exp(x - mx);
    }
  }
  // 2. out = sum of p v, p normalized (so no partial sum passes max |v|): lanes over 32 elements of
  //    d at a time, the logits again for each slice. NOTE: an accumulator array over more of d made
  //    ptxas give the attention kernels that inline this more registers or spills on their fast path.
  for (int e0 = 0; e0 < d; e0 += 32) {
    const int e = e0 + lane;
    double acc = 0.0;
    for (int64_t key = 0; key < total; key++) {
      const double p = exp(logit(key) - mx) / sum;
      if (p == 0.0 || e >= d) continue;
      const char *k, *v;
      locate(segs, nseg, key, &k, &v, esize);
      acc = fma(p, (double)load_f32_cg(v, kv_dtype, e), acc);
    }
    if (e < d) store_f32(out, out_dtype, out0 + e, (float)acc);
  }
}
