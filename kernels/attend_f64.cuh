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

// Element e of a stored row, as f32, read from L2 (the row may have been written by another block
// of the launch, after this SM's L1 last saw it).
__device__ __forceinline__ float row_elem_cg(const char* row, int dtype, int e) {
  if (dtype == SKV_F32) return __ldcg(reinterpret_cast<const float*>(row) + e);
  const uint16_t h = __ldcg(reinterpret_cast<const unsigned short*>(row) + e);
  return dtype == SKV_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// out[out0, out0 + d) (out_dtype) = softmax(scale q K^T) V over the `total` rows of the segments,
// q [d] f32, not yet scaled. Called by every lane of one warp, with the same arguments.
static __device__ __forceinline__ void attend_f64(const float* q, int d, float scale, const SkvSegment* segs, int nseg, int64_t total,
                                        int kv_dtype, void* out, int out_dtype, size_t out0) {
  const int lane = threadIdx.x % 32;
  const int64_t esize = kv_dtype == SKV_F32 ? 4 : 2;
  int s = 0;
  int64_t base = 0;
  // Key `key`'s row of keys (v: values), walking the segments forward (keys are visited in order).
  auto row = [&](int64_t key, bool v) {
    if (key == 0) s = 0, base = 0;
    while (s < nseg - 1 && key >= base + segs[s].n) base += segs[s++].n;
    return reinterpret_cast<const char*>(v ? segs[s].v : segs[s].k) + (key - base) * segs[s].ld * esize;
  };
  auto logit = [&](int64_t key) {
    const char* k = row(key, false);
    double acc = 0.0;
    for (int e = lane; e < d; e += 32) acc = fma((double)q[e], (double)row_elem_cg(k, kv_dtype, e), acc);
    return (double)scale * warp_sum(acc);
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
      if (p != 0.0 && e < d) acc = fma(p, (double)row_elem_cg(row(key, true), kv_dtype, e), acc);
    }
    if (e < d) store_f32(out, out_dtype, out0 + e, (float)acc);
  }
}
