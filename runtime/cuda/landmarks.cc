// landmarks(keys, dtype, ldk, nChunks, C, d, landmarks, minCos): chunk means (f32) and the smallest
// cosine of each chunk's rows to its mean (runtime/wasm/landmarks.cc).
#include <limits.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value Landmarks(const Napi::CallbackInfo& info) {
  const char* op = "landmarks";
  ArgCount(info, 8, op);
  const int n_chunks = (int)IntArg(info, 3, op, "nChunks", INT_MIN, INT_MAX);
  const int C = (int)IntArg(info, 4, op, "C", INT_MIN, INT_MAX);
  const int d = (int)IntArg(info, 5, op, "d", INT_MIN, INT_MAX);
  const bool empty = n_chunks <= 0 || C <= 0 || d <= 0;
  const void* keys = PtrArg(info, 0, op, "keys", empty);
  const int dtype = DtypeArg(info, 1, op, "dtype");
  const int64_t ldk = IntArg(info, 2, op, "ldk", 0, INT_MAX);
  float* landmarks = static_cast<float*>(PtrArg(info, 6, op, "landmarks", empty));
  float* min_cos = static_cast<float*>(PtrArg(info, 7, op, "minCos", empty));
  Check(info.Env(), op, ::Landmarks(keys, dtype, ldk, n_chunks, C, d, landmarks, min_cos, Stream()));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
