// quantizeValues(src, dtype, chunks, C, d, dst): chunks x C rows of d values of dtype into fp8
// chunks (runtime/wasm/fp8.h), chunk-contiguous at dst (device memory or mapped host pages).
#include <limits.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value QuantizeValues(const Napi::CallbackInfo& info) {
  const char* op = "quantizeValues";
  ArgCount(info, 6, op);
  const int chunks = (int)IntArg(info, 2, op, "chunks", INT_MIN, INT_MAX);
  const int C = (int)IntArg(info, 3, op, "C", INT_MIN, INT_MAX);
  const int d = (int)IntArg(info, 4, op, "d", INT_MIN, INT_MAX);
  const bool empty = chunks <= 0 || C <= 0 || d <= 0;
  const void* src = PtrArg(info, 0, op, "src", empty);
  const int dtype = DtypeArg(info, 1, op, "dtype");
  void* dst = PtrArg(info, 5, op, "dst", empty);
  Check(info.Env(), op, ::QuantizeValues(src, dtype, chunks, C, d, dst, Stream()));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
