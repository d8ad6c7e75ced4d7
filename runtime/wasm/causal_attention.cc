// Prefill attention of one kv group: query row i of each head sees keys [0, offset + i].
// Flash-attention tiling: a tile of query vectors (rows x heads) meets the keys one tile at a
// time, with an online softmax (running max, rescaled sums), so each key and value row is read
// once per query tile and nothing of size Sq x Sk is held. Both products of a tile, Q Kᵀ and P V,
// run through the GEMM's 4 x 8 register tile (gemm.h) on operands packed for it.
#include <math.h>
#include "dtype.h"
#include "gemm.h"
#include "online_softmax.h"
#include "scratch.h"

// Query vectors and keys per tile: a 64 x 64 tile keeps Q, O, Kᵀ and V (~130 KB at d = 128) in L2,
// and 64 queries per pass keep the repacking of each key and value row a few % of the arithmetic.
enum { FLASH_QUERIES = 64, FLASH_KEYS = 64 };

static inline int round_up(int n, int m) { return (n + m - 1) / m * m; }

// Row t of [n x d] stored rows as f32: in place for f32, else converted into `row`.
static inline const float* row_f32(const void* x, int dtype, int t, int d, float* row) {
  const void* src = dtype_at(x, dtype, (size_t)t * d);
  if (dtype == SKV_F32) return (const float*)src;
  load_f32(src, dtype, d, row);
  return row;
}

// B operand Kᵀ of n key rows: 8-key slivers stored channel by channel ([ceil(n/8)][d][8]).
static void pack_keys(const void* k, int dtype, int n, int d, float* row, float* out) {
  if (n % GEMM_NR) memset(out + (size_t)(n / GEMM_NR) * GEMM_NR * d, 0, sizeof(float) * GEMM_NR * d);
  for (int t = 0; t < n; t++) {
    const float* kt = row_f32(k, dtype, t, d, row);
    float* dst = out + (size_t)(t / GEMM_NR) * GEMM_NR * d + t % GEMM_NR;
    for (int e = 0; e < d; e++) dst[(size_t)e * GEMM_NR] = kt[e];
  }
}

// B operand V of n value rows: 8-channel slivers stored key by key ([ceil(d/8)][n][8]).
static void pack_values(const void* v, int dtype, int n, int d, float* row, float* out) {
  for (int t = 0; t < n; t++) {
    const float* vt = row_f32(v, dtype, t, d, row);
    for (int c = 0; c < d; c += GEMM_NR) {
      float* dst = out + (size_t)c * n + (size_t)t * GEMM_NR;
      int w = d - c < GEMM_NR ? d - c : GEMM_NR;
      memcpy(dst, vt + c, sizeof(float) * w);
      if (w < GEMM_NR) memset(dst + w, 0, sizeof(float) * (GEMM_NR - w));
    }
  }
}

// C[m x n] (row stride ldc) = a[m x k] b[k x n] + beta C; a in 4-row blocks stored column by column
// ([ceil(m/4)][k][4]), b as the pack_* functions store it.
static void tile_product(const float* a, const float* b, int m, int n, int k, float* c, int ldc, float beta) {
  for (int i = 0; i < m; i += GEMM_MR)
    for (int j = 0; j < n; j += GEMM_NR)
      gemm_micro_4x8(k, a + (size_t)i * k, b + (size_t)j * k, c + (size_t)i * ldc + j, ldc,
                     m - i < GEMM_MR ? m - i : GEMM_MR, n - j < GEMM_NR ? n - j : GEMM_NR, 1.f, beta);
}

namespace {

// One call's operands and scratch; query_tile does all the work of one query tile.
struct Flash {
  const float* q; int g, Sq, d; float scale; int offset;
  const void *k, *v; int dtype; float* out;
  int R, M;                    // query rows per tile, query vectors per tile (vector a = row a / g, head a % g)
  Scratch<float> qp;           // [ceil(M/4)][d][4] the tile's queries, scaled
  Scratch<float> o;            // [M x d] running sum of p * v
  Scratch<float> m, l;         // [M] running max and sum of exp(logit - m)
  Scratch<float> s;            // [M x FLASH_KEYS] logits
  Scratch<float> pp;           // [ceil(M/4)][FLASH_KEYS][4] probabilities
  Scratch<float> kp, vp, row;  // packed Kᵀ and V of the key tile; one converted row

  Flash(const float* q_, int g_, int Sq_, int d_, float scale_, int offset_, const void* k_, const void* v_, int dtype_, float* out_)
      : q(q_), g(g_), Sq(Sq_), d(d_), scale(scale_), offset(offset_), k(k_), v(v_), dtype(dtype_), out(out_),
        R(FLASH_QUERIES / g_ > 0 ? FLASH_QUERIES / g_ : 1), M(R * g_),
        qp((uint64_t)round_up(M, GEMM_MR) * d_), o((uint64_t)M * d_), m(M), l(M), s((uint64_t)M * FLASH_KEYS),
        pp((uint64_t)round_up(M, GEMM_MR) * FLASH_KEYS), kp((uint64_t)FLASH_KEYS * d_),
        vp((uint64_t)round_up(d_, GEMM_NR) * FLASH_KEYS), row(d_) {}

  // Rows [i0, i0 + R) of every head (fewer in the last tile).
  void query_tile(int i0) {
    const int rr = Sq - i0 < R ? Sq - i0 : R, mq = rr * g;
    // 1. Pack the tile's query vectors, scaled; the rows padding the last 4-block are zeros.
    if (mq % GEMM_MR) memset(qp + (size_t)(mq / GEMM_MR) * GEMM_MR * d, 0, sizeof(float) * GEMM_MR * d);
    for (int a = 0; a < mq; a++) {
      const float* src = q + ((size_t)(a % g) * Sq + i0 + a / g) * d;
      float* dst = qp + (size_t)(a / GEMM_MR) * GEMM_MR * d + a % GEMM_MR;
      for (int e = 0; e < d; e++) dst[(size_t)e * GEMM_MR] = scale * src[e];
    }
    for (int a = 0; a < mq; a++) { m[a] = -INFINITY; l[a] = 0.f; }
    memset(o, 0, sizeof(float) * mq * d);
    const int nkeys = offset + i0 + rr;  // keys the tile's last row sees
    for (int t0 = 0; t0 < nkeys; t0 += FLASH_KEYS) {
      const int n = nkeys - t0 < FLASH_KEYS ? nkeys - t0 : FLASH_KEYS;
      // 2. Logits S = (scale Q) Kᵀ.
      pack_keys(dtype_at(k, dtype, (size_t)t0 * d), dtype, n, d, row, kp);
      tile_product(qp, kp, mq, n, d, s, FLASH_KEYS, 0.f);
      // 3. Causal mask and online softmax, row by row, into packed P.
      if (mq % GEMM_MR) memset(pp + (size_t)(mq / GEMM_MR) * GEMM_MR * n, 0, sizeof(float) * GEMM_MR * n);
      for (int a = 0; a < mq; a++) softmax_row(a, n, offset + i0 + a / g + 1 - t0);
      // 4. O += P V.
      pack_values(dtype_at(v, dtype, (size_t)t0 * d), dtype, n, d, row, vp);
      tile_product(pp, vp, mq, d, n, o, d, 1.f);
    }
    // 5. out = O / l, back to [g x Sq x d]; a query that saw no key gets zeros.
    //    A query that overflowed f32 is redone in float64 over its visible keys (attend_f64).
    for (int a = 0; a < mq; a++) {
      float inv = l[a] > 0.f ? 1.f / l[a] : 0.f;
      const size_t row = (size_t)(a % g) * Sq + i0 + a / g;
      float* dst = out + row * d;
      for (int c = 0; c < d; c++) dst[c] = o[(size_t)a * d + c] * inv;
      if (softmax_finite(m[a], l[a], dst, d)) continue;
      const skv_segment seen{k, v, offset + i0 + a / g + 1, d};
      attend_f64(q + row * d, d, scale, &seen, 1, dtype, dst);
    }
  }

  // Logits row a of n keys, of which the first `visible` are not masked: new running max, what was
  // summed under the old one rescaled, exp(logit - max) added to the sum and written to P.
  void softmax_row(int a, int n, int visible) {
    float* sa = s + (size_t)a * FLASH_KEYS;
    for (int t = visible > 0 ? visible : 0; t < n; t++) sa[t] = -INFINITY;
    float mx = vmaxval(sa, n, m[a]);
    if (mx == -INFINITY) {  // nothing visible yet: P row stays 0
      memset(sa, 0, sizeof(float) * n);
    } else {
      if (mx > m[a]) softmax_raise(&m[a], &l[a], o + (size_t)a * d, d, mx);
      l[a] += vexp_shifted(sa, n, mx);
    }
    float* dst = pp + (size_t)(a / GEMM_MR) * GEMM_MR * n + a % GEMM_MR;
    for (int t = 0; t < n; t++) dst[(size_t)t * GEMM_MR] = sa[t];
  }
};

// NOTE: called through a volatile pointer so that no optimizer inlines it into the loop over tiles.
// V8 runs a wasm function's first calls in its baseline compiler (Liftoff) and its optimized code
// only from a later call on: were all tiles one function call, a long prompt would run ~2x slower
// to the end; as a call per tile, the tiles after the first few run optimized.
void query_tile_of(Flash& f, int i0) { f.query_tile(i0); }
void (*volatile run_query_tile)(Flash&, int) = query_tile_of;

}  // namespace

SKV_EXPORT void skv_causal_attention(const float* q, int g, int Sq, int d, float scale, int offset,
                                     const void* k, const void* v, int kv_dtype, float* out) {
  if (g <= 0 || Sq <= 0 || d <= 0) return;
  Flash f(q, g, Sq, d, scale, offset, k, v, kv_dtype, out);
  for (int i0 = 0; i0 < Sq; i0 += f.R) run_query_tile(f, i0);
}
