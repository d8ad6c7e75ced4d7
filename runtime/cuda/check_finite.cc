// checkFinite(table, first): the value checks of inputs that stay on the device (kernels/check_finite.cu).
// table: a Float64Array of [ptr, dtype, n, limit] per check; first: a device block of one u64 per
// check. Every check is queued, then one 8-byte-per-check copy back, which waits for the GPU.
// Returns an array: per check, the flat index of the first NaN, infinite or out-of-range element, or -1.
#include <limits.h>
#include <math.h>
#include <algorithm>
#include <vector>
#include "../wasm/half.h"
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

namespace {

// Index of the first i with bad(i), else -1. Blocks without an early exit inside, so the compiler
// vectorizes the common case (nothing bad), then a scalar pass over the one block that has it.
template <class Bad>
int64_t FirstBad(int64_t n, Bad bad) {
  for (int64_t b = 0; b < n; b += 4096) {
    const int64_t e = std::min(n, b + 4096);
    int any = 0;
    for (int64_t i = b; i < e; i++) any |= bad(i);
    if (any)
      for (int64_t i = b; i < e; i++)
        if (bad(i)) return i;
  }
  return -1;
}

}  // namespace

// checkFiniteHost(array, dtype, limit): checkValues (packages/shadowkv/src/policies/validate.ts) on a
// host array, natively: several times faster than the JS loop, on every decode step's inputs. The
// index of the first element that is NaN, infinite or of magnitude above `limit` (exactly as JS
// compares), or -1. 16-bit arrays: exponent all ones is Inf/NaN; the range is decoded only when it binds.
Napi::Value CheckFiniteHostOp(const Napi::CallbackInfo& info) {
  const char* op = "checkFiniteHost";
  ArgCount(info, 3, op);
  Napi::TypedArray a = TypedArrayArg(info, 0, op);
  const int dtype = DtypeArg(info, 1, op, "dtype");
  if (!info[2].IsNumber()) throw Napi::TypeError::New(info.Env(), "checkFiniteHost: limit must be a number");
  const double limit = info[2].As<Napi::Number>().DoubleValue();
  const bool wide = dtype == SKV_F32;
  if (wide != (a.TypedArrayType() == napi_float32_array) || (!wide && a.TypedArrayType() != napi_uint16_array))
    throw Napi::TypeError::New(info.Env(), "checkFiniteHost: the array does not hold the dtype's elements (Float32Array for f32, Uint16Array for f16/bf16)");
  const int64_t n = (int64_t)a.ElementLength();
  // |x| <= limit (a double) holds exactly when |x| <= the largest float not above it: float compares vectorize.
  float bound = (float)limit;
  if ((double)bound > limit) bound = nextafterf(bound, 0.0f);
  int64_t at;
  if (wide) {
    const float* x = static_cast<const float*>(TypedArrayData(a));
    at = FirstBad(n, [&](int64_t i) { return (int)!(fabsf(x[i]) <= bound); });  // NaN fails the comparison
  } else {
    const uint16_t* x = static_cast<const uint16_t*>(TypedArrayData(a));
    const uint16_t mask = dtype == SKV_F16 ? 0x7c00 : 0x7f80;
    at = FirstBad(n, [&](int64_t i) { return (int)((x[i] & mask) == mask); });
    const double max = dtype == SKV_F16 ? 65504.0 : 3.3895313892515355e38;
    const auto outside = [&](auto widen) { return FirstBad(n, [&](int64_t i) { return (int)!(fabsf(widen(x[i])) <= bound); }); };
    if (at < 0 && limit < max)
      at = dtype == SKV_F16 ? outside([](uint16_t h) { return f16_to_f32(h); }) : outside([](uint16_t h) { return bf16_to_f32(h); });
  }
  return Napi::Number::New(info.Env(), (double)at);
}

}  // namespace shadowkv_cuda
