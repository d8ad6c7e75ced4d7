// convertRows(src, srcDtype, srcLd, dst, dstDtype, dstLd, rows, cols): a strided convert
// (runtime/wasm/convert_rows.cc).
#include <limits.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value ConvertRows(const Napi::CallbackInfo& info) {
  const char* op = "convertRows";
  ArgCount(info, 8, op);
  const void* src = PtrArg(info, 0, op, "src");
  const int src_dtype = DtypeArg(info, 1, op, "srcDtype");
  const int64_t src_ld = IntArg(info, 2, op, "srcLd", 0, INT_MAX);
  void* dst = PtrArg(info, 3, op, "dst");
  const int dst_dtype = DtypeArg(info, 4, op, "dstDtype");
  const int64_t dst_ld = IntArg(info, 5, op, "dstLd", 0, INT_MAX);
  const int rows = (int)IntArg(info, 6, op, "rows", 0, INT_MAX);
  const int cols = (int)IntArg(info, 7, op, "cols", 0, INT_MAX);
  Check(info.Env(), op, ::ConvertRows(src, src_dtype, src_ld, dst, dst_dtype, dst_ld, rows, cols, Stream()));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
