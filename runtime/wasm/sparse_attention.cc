// Decode attention of one kv group: g query heads over the union of selected segments
// (outlier chunks, rebuilt chunks, the exact tail), in one online-softmax stream; a query that
// overflows f32 is redone in float64 (attend_f64).
#include "online_softmax.h"

SKV_EXPORT void skv_sparse_attention(const float* q, int g, int d, float scale,
                                     const skv_segment* segs, int nseg, int kv_dtype, float* out) {
  if (g <= 0 || d <= 0) return;
  OnlineSoftmax st(g, d);
  for (size_t i = 0; i < (size_t)g * d; i++) st.q[i] = scale * q[i];
  st.reset();
  for (int s = 0; s < nseg; s++)
    for (int t0 = 0; t0 < segs[s].n; t0 += ATTN_BLOCK) {
      int n = segs[s].n - t0 < ATTN_BLOCK ? segs[s].n - t0 : ATTN_BLOCK;
      size_t off = (size_t)t0 * segs[s].ld;
      st.block(dtype_at(segs[s].k, kv_dtype, off), dtype_at(segs[s].v, kv_dtype, off), segs[s].ld, kv_dtype, n);
    }
  int keys = 0;
  for (int s = 0; s < nseg; s++) keys += segs[s].n;
  for (int j = 0; j < g; j++) {  // [g x d]; zeros if no keys
    float* o = out + (size_t)j * d;
    st.finish(j, o);
    if (keys && !softmax_finite(st.m[j], st.l[j], o, d)) attend_f64(q + (size_t)j * d, d, scale, segs, nseg, kv_dtype, o);
  }
}
