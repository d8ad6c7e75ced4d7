// causalAttention(q, g, Sq, d, scale, offset, k, v, kvDtype, out): prefill attention of one kv
// group, query row i seeing keys [0, offset + i] (runtime/wasm/causal_attention.cc).
#include <limits.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value CausalAttention(const Napi::CallbackInfo& info) {
  const char* op = "causalAttention";
  ArgCount(info, 10, op);
  const int g = (int)IntArg(info, 1, op, "g", INT_MIN, INT_MAX);
  const int Sq = (int)IntArg(info, 2, op, "Sq", INT_MIN, INT_MAX);
  const int d = (int)IntArg(info, 3, op, "d", INT_MIN, INT_MAX);
  const float scale = FloatArg(info, 4, op, "scale");
  const int offset = (int)IntArg(info, 5, op, "offset", 0, INT_MAX);
  const bool empty = g <= 0 || Sq <= 0 || d <= 0;
  const float* q = static_cast<const float*>(PtrArg(info, 0, op, "q", empty));
  const void* k = PtrArg(info, 6, op, "k", empty);
  const void* v = PtrArg(info, 7, op, "v", empty);
  const int kv_dtype = DtypeArg(info, 8, op, "kvDtype");
  float* out = static_cast<float*>(PtrArg(info, 9, op, "out", empty));
  if ((int64_t)offset + Sq > INT_MAX) throw Napi::RangeError::New(info.Env(), "causalAttention: offset + Sq past 2^31");
  Check(info.Env(), op, ::CausalAttention(q, g, Sq, d, scale, offset, k, v, kv_dtype, out, Stream()));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
