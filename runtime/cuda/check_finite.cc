// checkFinite(table, first): the value checks of inputs that stay on the device (kernels/check_finite.cu).
// table: a Float64Array of [ptr, dtype, n, limit] per check; first: a device block of one u64 per
// check. Every check is queued, then one 8-byte-per-check copy back, which waits for the GPU.
// Returns an array: per check, the flat index of the first NaN, infinite or out-of-range element, or -1.
#include <limits.h>
#include <vector>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value CheckFiniteOp(const Napi::CallbackInfo& info) {
  const char* op = "checkFinite";
  ArgCount(info, 2, op);
  Napi::Float64Array table = TableArg(info, 0, op, "table", 4);
  const size_t count = table.ElementLength() / 4;
  Napi::Array out = Napi::Array::New(info.Env(), count);
  if (count == 0) return out;
  auto* first = static_cast<unsigned long long*>(PtrArg(info, 1, op, "first"));
  Check(info.Env(), op, cudaMemsetAsync(first, 0xFF, count * sizeof(unsigned long long), Stream()));
  for (size_t i = 0; i < count; i++) {
    const double ptr = table[4 * i], dtype = table[4 * i + 1], n = table[4 * i + 2];
    if (!(ptr > 0 && ptr < 9007199254740992.0) || !(dtype == SKV_F32 || dtype == SKV_F16 || dtype == SKV_BF16) || !(n >= 0 && n <= 1125899906842624.0))
      throw Napi::RangeError::New(info.Env(), "checkFinite: check " + std::to_string(i) + " has a bad address, dtype or count");
    const void* x = reinterpret_cast<const void*>((uintptr_t)ptr);
    Check(info.Env(), op, ::CheckFinite(x, (int)dtype, (int64_t)n, (float)table[4 * i + 3], first + i, Stream()));
  }
  std::vector<unsigned long long> host(count);
  Check(info.Env(), op, cudaMemcpy(host.data(), first, count * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < count; i++) out.Set((uint32_t)i, Napi::Number::New(info.Env(), host[i] == ULLONG_MAX ? -1.0 : (double)host[i]));
  return out;
}

}  // namespace shadowkv_cuda
