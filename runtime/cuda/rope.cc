// rope(x, rows, d, ldx, positions, invFreq, style, direction): RoPE in place on f32 rows with
// float64 angles (runtime/wasm/rope.cc). positions: device i32 [rows]; invFreq: device f64 [d/2].
#include <limits.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value Rope(const Napi::CallbackInfo& info) {
  const char* op = "rope";
  ArgCount(info, 8, op);
  const int rows = (int)IntArg(info, 1, op, "rows", INT_MIN, INT_MAX);
  const bool empty = rows <= 0;
  float* x = static_cast<float*>(PtrArg(info, 0, op, "x", empty));
  const int d = (int)IntArg(info, 2, op, "d", 0, INT_MAX);
  const int64_t ldx = IntArg(info, 3, op, "ldx", 0, INT_MAX);
  const int32_t* positions = static_cast<const int32_t*>(PtrArg(info, 4, op, "positions", empty));
  const double* inv_freq = static_cast<const double*>(PtrArg(info, 5, op, "invFreq", empty));
  const int style = (int)IntArg(info, 6, op, "style", SKV_ROPE_HALF, SKV_ROPE_INTERLEAVED);
  const int direction = (int)IntArg(info, 7, op, "direction", -1, 1);
  Check(info.Env(), op, ::Rope(x, rows, d, ldx, positions, inv_freq, style, direction, Stream()));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
