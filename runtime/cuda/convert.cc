// convert(src, srcDtype, dst, dstDtype, n): dst = src converted, n elements (runtime/wasm/convert.cc).
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value Convert(const Napi::CallbackInfo& info) {
  const char* op = "convert";
  ArgCount(info, 5, op);
  const void* src = PtrArg(info, 0, op, "src");
  const int src_dtype = DtypeArg(info, 1, op, "srcDtype");
  void* dst = PtrArg(info, 2, op, "dst");
  const int dst_dtype = DtypeArg(info, 3, op, "dstDtype");
  const int64_t n = IntArg(info, 4, op, "n", 0, (int64_t)1 << 50);
  Check(info.Env(), op, ::Convert(src, src_dtype, dst, dst_dtype, n, Stream()));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
