// scoreChunks(q, g, d, scale, landmarks, dtype, n, scores, work): scores[c] = max_j softmax_c(
// scale q_j . L_c) for one kv group (runtime/wasm/score_chunks.cc). work: g*(n+64) f32
// (device): the logits, then per-block maxima.
#include <limits.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value ScoreChunks(const Napi::CallbackInfo& info) {
  const char* op = "scoreChunks";
  ArgCount(info, 9, op);
  const int g = (int)IntArg(info, 1, op, "g", INT_MIN, INT_MAX);
  const int d = (int)IntArg(info, 2, op, "d", INT_MIN, INT_MAX);
  const float scale = FloatArg(info, 3, op, "scale");
  const int n = (int)IntArg(info, 6, op, "n", INT_MIN, INT_MAX);
  const bool empty = n <= 0;
  const float* q = static_cast<const float*>(PtrArg(info, 0, op, "q", empty || g <= 0));
  const void* landmarks = PtrArg(info, 4, op, "landmarks", empty || g <= 0);
  const int dtype = DtypeArg(info, 5, op, "dtype");
  float* scores = static_cast<float*>(PtrArg(info, 7, op, "scores", empty));
  float* work = static_cast<float*>(PtrArg(info, 8, op, "work", empty || g <= 0));
  float* maxes = work ? work + (size_t)(g > 0 ? g : 0) * (size_t)(n > 0 ? n : 0) : nullptr;
  Check(info.Env(), op, ::ScoreChunks(q, g, d, scale, landmarks, dtype, n, scores, work, maxes, Stream()));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
