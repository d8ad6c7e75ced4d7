// Prefill attention of one kv group: query row i of each head sees keys [0, offset + i].
// A few query rows of all g heads share one pass over the keys, so each key row is read once
// per pass instead of once per (row, head).
#include "online_softmax.h"

enum { CAUSAL_QUERIES = 16 };  // query vectors (rows x heads) per pass over the keys

SKV_EXPORT void skv_causal_attention(const float* q, int g, int Sq, int d, float scale, int offset,
                                     const void* k, const void* v, int kv_dtype, float* out) {
  if (g <= 0 || Sq <= 0 || d <= 0) return;
  int R = CAUSAL_QUERIES / g > 0 ? CAUSAL_QUERIES / g : 1;  // query rows per pass
  OnlineSoftmax st(R * g, d);
  Scratch<int> visible((uint64_t)R * g);  // [R x g] keys of the current block each query may see
  for (int i0 = 0; i0 < Sq; i0 += R) {
    int rr = Sq - i0 < R ? Sq - i0 : R;
    st.nq = rr * g;  // query vector r * g + j is head j, row i0 + r
    for (int r = 0; r < rr; r++)
      for (int j = 0; j < g; j++)
        for (int e = 0; e < d; e++)
          st.q[(size_t)(r * g + j) * d + e] = scale * q[((size_t)j * Sq + i0 + r) * d + e];
    st.reset();
    int nkeys = offset + i0 + rr;  // keys the last row of the pass sees
    for (int t0 = 0; t0 < nkeys; t0 += ATTN_BLOCK) {
      int n = nkeys - t0 < ATTN_BLOCK ? nkeys - t0 : ATTN_BLOCK;
      for (int r = 0; r < rr; r++)
        for (int j = 0; j < g; j++) {
          int vis = offset + i0 + r + 1 - t0;
          visible[r * g + j] = vis < 0 ? 0 : vis > n ? n : vis;
        }
      st.block(dtype_at(k, kv_dtype, (size_t)t0 * d), dtype_at(v, kv_dtype, (size_t)t0 * d), d, kv_dtype, n, visible);
    }
    for (int r = 0; r < rr; r++)
      for (int j = 0; j < g; j++) st.finish(r * g + j, out + ((size_t)j * Sq + i0 + r) * d);  // [g x Sq x d]
  }
}
