// gemm(M, N, K, alpha, A, aDtype, lda, transA, aRows, B, bDtype, ldb, transB, beta, C, ldc):
// C = alpha op(A) op(B) + beta C in f32 (runtime/wasm/gemm.cc). aRows: device i32 rows, or 0.
#include <limits.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value Gemm(const Napi::CallbackInfo& info) {
  const char* op = "gemm";
  ArgCount(info, 16, op);
  const int M = (int)IntArg(info, 0, op, "M", INT_MIN, INT_MAX);
  const int N = (int)IntArg(info, 1, op, "N", INT_MIN, INT_MAX);
  const int K = (int)IntArg(info, 2, op, "K", INT_MIN, INT_MAX);
  const float alpha = FloatArg(info, 3, op, "alpha");
  const bool empty = M <= 0 || N <= 0;  // nothing is read or written: addresses may be anything
  const void* A = PtrArg(info, 4, op, "A", empty);
  const int a_dtype = DtypeArg(info, 5, op, "aDtype");
  const int64_t lda = IntArg(info, 6, op, "lda", 0, INT_MAX);
  const int transA = (int)IntArg(info, 7, op, "transA", 0, 1);
  const int32_t* a_rows = static_cast<const int32_t*>(PtrArg(info, 8, op, "aRows", true));
  const void* B = PtrArg(info, 9, op, "B", empty);
  const int b_dtype = DtypeArg(info, 10, op, "bDtype");
  const int64_t ldb = IntArg(info, 11, op, "ldb", 0, INT_MAX);
  const int transB = (int)IntArg(info, 12, op, "transB", 0, 1);
  const float beta = FloatArg(info, 13, op, "beta");
  float* C = static_cast<float*>(PtrArg(info, 14, op, "C", empty));
  const int64_t ldc = IntArg(info, 15, op, "ldc", 0, INT_MAX);
  Check(info.Env(), op, ::Gemm(M, N, K, alpha, A, a_dtype, lda, transA, a_rows, B, b_dtype, ldb, transB, beta, C, ldc, Stream()));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
