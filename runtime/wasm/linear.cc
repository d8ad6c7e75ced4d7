// The projections of a model loop (packages/llama): out = x . W^T with W stored [N x K], f32, f16 or
// bf16. Prompt-sized inputs go through skv_gemm's packed panels. One to three rows (a decode step)
// read each W row once where it lies, a block of columns at a time: at M = 1 packing W would cost
// as much as the product itself, which is bound by reading W.
#include "abi.h"
#include "dtype.h"
#include "gemm.h"

namespace {

enum { LINEAR_KB = 256 };  // W columns widened to f32 per block: 4 rows x 1 KB stay in L1
alignas(16) float wide[4][LINEAR_KB];  // NOTE: static: the runtime is single-threaded

// W row n, columns [k0, k0 + kb), as f32: in place for f32, else widened into `buf`.
inline const float* w_run(const void* W, int dtype, int K, int n, int k0, int kb, float* buf) {
  const void* src = dtype_at(W, dtype, (size_t)n * K + k0);
  if (dtype == SKV_F32) return (const float*)src;
  load_f32(src, dtype, kb, buf);
  return buf;
}

// sum[j] += x[0:kb] . w_j[0:kb] for four W rows at once (x is read once for all four).
inline void dot4(const float* x, const float* w0, const float* w1, const float* w2, const float* w3, int kb, float* sum) {
  f32x4 a0 = vsplat(0.f), a1 = a0, a2 = a0, a3 = a0;
  int k = 0;
  for (; k + 4 <= kb; k += 4) {
    f32x4 xv = vload(x + k);
    a0 = vfma(xv, vload(w0 + k), a0);
    a1 = vfma(xv, vload(w1 + k), a1);
    a2 = vfma(xv, vload(w2 + k), a2);
    a3 = vfma(xv, vload(w3 + k), a3);
  }
  float s0 = vhsum(a0), s1 = vhsum(a1), s2 = vhsum(a2), s3 = vhsum(a3);
  for (; k < kb; k++) { s0 += x[k] * w0[k]; s1 += x[k] * w1[k]; s2 += x[k] * w2[k]; s3 += x[k] * w3[k]; }
  sum[0] += s0; sum[1] += s1; sum[2] += s2; sum[3] += s3;
}

inline float dot1(const float* x, const float* w, int kb) {
  f32x4 a = vsplat(0.f);
  int k = 0;
  for (; k + 4 <= kb; k += 4) a = vfma(vload(x + k), vload(w + k), a);
  float s = vhsum(a);
  for (; k < kb; k++) s += x[k] * w[k];
  return s;
}

}  // namespace

SKV_EXPORT void skv_linear(const float* x, int M, int K, const void* W, int w_dtype, int N, float* out) {
  if (M >= GEMM_MR || K <= 0) {
    skv_gemm(M, N, K, 1.f, x, SKV_F32, K, 0, nullptr, W, w_dtype, K, 1, 0.f, out, N);
    return;
  }
  int n = 0;
  for (; n + 4 <= N; n += 4) {  // four W rows per pass
    float sum[GEMM_MR - 1][4] = {};
    for (int k0 = 0; k0 < K; k0 += LINEAR_KB) {
      int kb = K - k0 < LINEAR_KB ? K - k0 : LINEAR_KB;
      const float* w[4];
      for (int j = 0; j < 4; j++) w[j] = w_run(W, w_dtype, K, n + j, k0, kb, wide[j]);
      for (int r = 0; r < M; r++) dot4(x + (size_t)r * K + k0, w[0], w[1], w[2], w[3], kb, sum[r]);
    }
    for (int r = 0; r < M; r++)
      for (int j = 0; j < 4; j++) out[(size_t)r * N + n + j] = sum[r][j];
  }
  for (; n < N; n++) {  // the last N % 4 rows, one at a time
    float sum[GEMM_MR - 1] = {};
    for (int k0 = 0; k0 < K; k0 += LINEAR_KB) {
      int kb = K - k0 < LINEAR_KB ? K - k0 : LINEAR_KB;
      const float* w = w_run(W, w_dtype, K, n, k0, kb, wide[0]);
      for (int r = 0; r < M; r++) sum[r] += dot1(x + (size_t)r * K + k0, w, kb);
    }
    for (int r = 0; r < M; r++) out[(size_t)r * N + n] = sum[r];
  }
}
