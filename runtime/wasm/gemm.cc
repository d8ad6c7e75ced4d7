// f32 GEMM with packed panels (Goto/BLIS loop order). Packing absorbs everything that varies:
// transposes, the a_rows gather and f16/bf16 -> f32 conversion, so there is one micro-kernel.
#include "abi.h"
#include "dtype.h"
#include "gemm.h"

namespace {

// NOTE: static panels: the runtime is single-threaded and skv_gemm never re-enters itself.
alignas(16) float packA[GEMM_MC * GEMM_KC];  // [MC/MR][KC][MR]
alignas(16) float packB[GEMM_KC * GEMM_NC];  // [NC/NR][KC][NR]
alignas(16) float rowbuf[GEMM_NC > GEMM_KC ? GEMM_NC : GEMM_KC];  // one converted stored run

struct Operand {
  const void* p; int dtype; int ld; int trans; const int32_t* rows;
  // Loads n contiguous stored elements starting at (row r, column c) of the stored matrix.
  const float* run(size_t r, size_t c, int n) const {
    size_t row = rows ? (size_t)rows[r] : r;
    const void* src = dtype_at(p, dtype, row * (size_t)ld + c);
    if (dtype == SKV_F32) return (const float*)src;
    load_f32(src, dtype, n, rowbuf);
    return rowbuf;
  }
};

// packA <- op(A)[i0 : i0+mc, k0 : k0+kc], zero-padded to whole MR slivers.
void pack_a(const Operand& A, int i0, int mc, int k0, int kc) {
  int slivers = (mc + GEMM_MR - 1) / GEMM_MR;
  if (mc % GEMM_MR) memset(packA + (size_t)(slivers - 1) * kc * GEMM_MR, 0, sizeof(float) * kc * GEMM_MR);
  if (A.trans) {  // op(A)(i, k) = A[k][i]: stored rows run along i
    for (int p = 0; p < kc; p++) {
      const float* s = A.run(k0 + p, i0, mc);
      for (int i = 0; i < mc; i += GEMM_MR)
        memcpy(packA + (size_t)i * kc + p * GEMM_MR, s + i, sizeof(float) * (mc - i < GEMM_MR ? mc - i : GEMM_MR));
    }
  } else {  // stored rows run along k
    for (int i = 0; i < mc; i++) {
      const float* s = A.run(i0 + i, k0, kc);
      float* d = packA + (size_t)(i / GEMM_MR) * kc * GEMM_MR + i % GEMM_MR;
      for (int p = 0; p < kc; p++) d[p * GEMM_MR] = s[p];
    }
  }
}

// packB <- op(B)[k0 : k0+kc, j0 : j0+nc], zero-padded to whole NR slivers.
void pack_b(const Operand& B, int k0, int kc, int j0, int nc) {
  int slivers = (nc + GEMM_NR - 1) / GEMM_NR;
  if (nc % GEMM_NR) memset(packB + (size_t)(slivers - 1) * kc * GEMM_NR, 0, sizeof(float) * kc * GEMM_NR);
  if (B.trans) {  // op(B)(k, j) = B[j][k]: stored rows run along k
    for (int j = 0; j < nc; j++) {
      const float* s = B.run(j0 + j, k0, kc);
      float* d = packB + (size_t)(j / GEMM_NR) * kc * GEMM_NR + j % GEMM_NR;
      for (int p = 0; p < kc; p++) d[p * GEMM_NR] = s[p];
    }
  } else {  // stored rows run along j: copy whole NR-wide pieces
    for (int p = 0; p < kc; p++) {
      const float* s = B.run(k0 + p, j0, nc);
      for (int j = 0; j < nc; j += GEMM_NR)
        memcpy(packB + (size_t)j * kc + p * GEMM_NR, s + j, sizeof(float) * (nc - j < GEMM_NR ? nc - j : GEMM_NR));
    }
  }
}

}  // namespace

SKV_EXPORT void skv_gemm(int M, int N, int K, float alpha,
                         const void* A, int a_dtype, int lda, int transA, const int32_t* a_rows,
                         const void* B, int b_dtype, int ldb, int transB,
                         float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // no products: C = beta * C
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta != 0.f ? beta * C[(size_t)i * ldc + j] : 0.f;
    return;
  }
  // NOTE: a_rows gathers stored rows, which is op(A)'s rows only when A is not transposed.
  Operand a{A, a_dtype, lda, transA, transA ? nullptr : a_rows};
  Operand b{B, b_dtype, ldb, transB, nullptr};
  for (int jc = 0; jc < N; jc += GEMM_NC) {
    int nc = N - jc < GEMM_NC ? N - jc : GEMM_NC;
    for (int pc = 0; pc < K; pc += GEMM_KC) {
      int kc = K - pc < GEMM_KC ? K - pc : GEMM_KC;
      float bet = pc == 0 ? beta : 1.f;  // later K blocks accumulate onto the first
      pack_b(b, pc, kc, jc, nc);
      for (int ic = 0; ic < M; ic += GEMM_MC) {
        int mc = M - ic < GEMM_MC ? M - ic : GEMM_MC;
        pack_a(a, ic, mc, pc, kc);
        for (int jr = 0; jr < nc; jr += GEMM_NR)
          for (int ir = 0; ir < mc; ir += GEMM_MR)
            gemm_micro_4x8(kc, packA + (size_t)ir * kc, packB + (size_t)jr * kc,
                           C + (size_t)(ic + ir) * ldc + jc + jr, ldc,
                           mc - ir < GEMM_MR ? mc - ir : GEMM_MR, nc - jr < GEMM_NR ? nc - jr : GEMM_NR,
                           alpha, bet);
      }
    }
  }
}
