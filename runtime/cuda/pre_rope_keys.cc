// preRopeKeys(src, dtype, headStride, heads, rows, d, dst, ld, invFreq, style, first): every head's
// post-RoPE key rows to f32 columns of one matrix with RoPE undone at positions first + r
// (runtime/wasm/pre_rope_keys.cc).
#include <limits.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value PreRopeKeys(const Napi::CallbackInfo& info) {
  const char* op = "preRopeKeys";
  ArgCount(info, 11, op);
  const int dtype = DtypeArg(info, 1, op, "dtype");
  const int64_t head_stride = IntArg(info, 2, op, "headStride", 0, (int64_t)1 << 40);
  const int heads = (int)IntArg(info, 3, op, "heads", 0, INT_MAX);
  const int rows = (int)IntArg(info, 4, op, "rows", 0, INT_MAX);
  const int d = (int)IntArg(info, 5, op, "d", 2, INT_MAX);
  const bool empty = heads == 0 || rows == 0;
  const void* src = PtrArg(info, 0, op, "src", empty);
  float* dst = static_cast<float*>(PtrArg(info, 6, op, "dst", empty));
  const int64_t ld = IntArg(info, 7, op, "ld", 0, (int64_t)1 << 40);
  const double* inv_freq = static_cast<const double*>(PtrArg(info, 8, op, "invFreq", empty));
  const int style = (int)IntArg(info, 9, op, "style", SKV_ROPE_HALF, SKV_ROPE_INTERLEAVED);
  const int first = (int)IntArg(info, 10, op, "first", 0, INT_MAX);
  if (d % 2) throw Napi::RangeError::New(info.Env(), "preRopeKeys: d is odd (RoPE rotates pairs)");
  Check(info.Env(), op, ::PreRopeKeys(src, dtype, head_stride, heads, rows, d, dst, ld, inv_freq, style, first, Stream()));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
