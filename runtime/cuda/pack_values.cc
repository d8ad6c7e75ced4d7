// packValues(src, chunks, n, dst, bases): chunks x n bf16 values into packed chunks (runtime/wasm/
// pack.h) in their 2n-byte slots at dst (device memory or mapped host pages), each chunk's base to
// the device byte bases + c.
#include <limits.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value PackValues(const Napi::CallbackInfo& info) {
  const char* op = "packValues";
  ArgCount(info, 5, op);
  const int chunks = (int)IntArg(info, 1, op, "chunks", INT_MIN, INT_MAX);
  const int n = (int)IntArg(info, 2, op, "n", INT_MIN, INT_MAX);
  const bool empty = chunks <= 0 || n <= 0;
  const void* src = PtrArg(info, 0, op, "src", empty);
  void* dst = PtrArg(info, 3, op, "dst", empty);
  uint8_t* bases = static_cast<uint8_t*>(PtrArg(info, 4, op, "bases", empty));
  Check(info.Env(), op, ::PackValues(src, chunks, n, dst, bases, Stream()));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
