// checkFinite(table, first): the value checks of inputs that stay on the device (kernels/check_finite.cu).
// table: a Float64Array of [ptr, dtype, n, limit] per check; first: a device block of one u64 per
// check. Every check is queued, then one 8-byte-per-check copy back, which waits for the GPU.
// Returns an array: per check, the flat index of the first NaN, infinite or out-of-range element, or -1.
#include <limits.h>
#include <math.h>
#include <algorithm>
#include <thread>
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

// Where a scan also copies what it reads (stageStepInputs): es-byte elements from src to dst.
struct CopyTo {
  char* dst;
  const char* src;
  size_t es;
};

// Index of the first i in [b0, n) with bad(i), else -1. Blocks without an early exit inside, so the
// compiler vectorizes the common case (nothing bad), then a scalar pass over the one block that has it.
// With `to`, each block is copied before it is scanned, so the scan reads it from the cache.
template <class Bad>
int64_t FirstBad(int64_t b0, int64_t n, Bad bad, const CopyTo* to) {
  for (int64_t b = b0; b < n; b += 4096) {
    const int64_t e = std::min(n, b + 4096);
    if (to) memcpy(to->dst + b * to->es, to->src + b * to->es, (size_t)(e - b) * to->es);
    int any = 0;
    for (int64_t i = b; i < e; i++) any |= bad(i);
    if (any)
      for (int64_t i = b; i < e; i++)
        if (bad(i)) return i;
  }
  return -1;
}

// Elements from which a scan is cut into one range per host thread (at most 8): a prompt's keys
// and values (2 x 256 MiB of bf16 a 128K row) took 29 + 11 ms on one thread of a 2-core build
// machine; a decode step's inputs (tens of KB) stay on the caller's.
constexpr int64_t PARALLEL_MIN = 1 << 22;

// FirstBad over [0, n), on several threads where n is large: each takes a range, and the first
// range with a bad element answers. NOTE: a thread the system refuses leaves its range to this one.
// NOTE: hardware_concurrency() is asked only for a large scan: glibc answers it by opening and
// reading /sys/devices/system/cpu/online, ~8 us a call, three calls a decode step (query, key, value).
template <class Bad>
int64_t FirstBadOf(int64_t n, Bad bad, const CopyTo* to) {
  if (n < PARALLEL_MIN) return FirstBad(0, n, bad, to);
  const unsigned hw = std::thread::hardware_concurrency();
  const int threads = hw < 2 ? 1 : (int)std::min(8u, hw);
  if (threads == 1) return FirstBad(0, n, bad, to);
  const int64_t per = (n + threads - 1) / threads;
  std::vector<int64_t> first(threads, -1);
  auto scan = [&](int t) { first[t] = FirstBad((int64_t)t * per, std::min(n, (int64_t)(t + 1) * per), bad, to); };
  std::vector<std::thread> pool;
  int started = 1;
  try {
    for (; started < threads; started++) pool.emplace_back(scan, started);
  } catch (...) {
  }
  scan(0);
  for (int t = started; t < threads; t++) scan(t);
  for (auto& th : pool) th.join();
  for (int64_t f : first)
    if (f >= 0) return f;
  return -1;
}

// The largest magnitude bits (x & 0x7fff) of a 16-bit float within `bound`, -1 when none is:
// 16-bit floats of one sign order like their bits, and Inf / NaN (exponent all ones) sit above every
// finite one, so |x| <= bound is one integer compare that also rejects them.
template <class Widen>
int LargestWithin(float bound, uint16_t inf, Widen widen) {
  if (!(widen(0) <= bound)) return -1;
  int lo = 0, hi = inf;  // widen(lo) <= bound < widen(hi), Inf counted as above any bound
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    (widen((uint16_t)mid) <= bound ? lo : hi) = mid;
  }
  return lo;
}

}  // namespace

int64_t FirstNonFinite(const void* data, int dtype, int64_t n, double limit, void* copy) {
  // |x| <= limit (a double) holds exactly when |x| <= the largest float not above it: float compares vectorize.
  float bound = (float)limit;
  if ((double)bound > limit) bound = nextafterf(bound, 0.0f);
  const CopyTo to{static_cast<char*>(copy), static_cast<const char*>(data), dtype == SKV_F32 ? 4u : 2u};
  const CopyTo* with = copy ? &to : nullptr;
  if (dtype == SKV_F32) {
    const float* x = static_cast<const float*>(data);
    return FirstBadOf(n, [&](int64_t i) { return (int)!(fabsf(x[i]) <= bound); }, with);  // NaN fails the comparison
  }
  const uint16_t* x = static_cast<const uint16_t*>(data);
  const uint16_t inf = dtype == SKV_F16 ? 0x7c00 : 0x7f80;
  // As the JS scan: the range counts only for a limit below the dtype's largest (not for NaN).
  const bool binds = limit < (dtype == SKV_F16 ? 65504.0 : 3.3895313892515355e38);
  const int within = !binds ? inf - 1
                   : dtype == SKV_F16 ? LargestWithin(bound, inf, [](uint16_t h) { return f16_to_f32(h); })
                                      : LargestWithin(bound, inf, [](uint16_t h) { return bf16_to_f32(h); });
  const uint16_t top = (uint16_t)std::max(within, 0);
  int64_t at = within < 0 ? (n > 0 ? 0 : -1) : FirstBadOf(n, [&](int64_t i) { return (int)((uint16_t)(x[i] & 0x7fff) > top); }, with);
  if (at >= 0 && binds) {  // a NaN or Inf anywhere comes before the first out of range
    const int64_t nonfinite = FirstBadOf(n, [&](int64_t i) { return (int)((x[i] & inf) == inf); }, nullptr);
    if (nonfinite >= 0) at = nonfinite;
  }
  return at;
}

void CheckHostArray(const Napi::CallbackInfo& info, const Napi::TypedArray& a, int dtype, const char* op) {
  const bool wide = dtype == SKV_F32;
  if (wide != (a.TypedArrayType() == napi_float32_array) || (!wide && a.TypedArrayType() != napi_uint16_array))
    throw Napi::TypeError::New(info.Env(), std::string(op) + ": the array does not hold the dtype's elements (Float32Array for f32, Uint16Array for f16/bf16)");
}

// checkFiniteHost(array, dtype, limit): checkValues (packages/shadowkv/src/policies/validate.ts) on a
// host array, natively: several times faster than the JS loop, on every prompt and on the decode
// inputs that stageStepInputs does not take. The index of the first element that is NaN, infinite or of magnitude
// above `limit` (exactly as JS compares), or -1; for 16-bit arrays, as the JS scan, the first NaN or
// Inf wherever it is, and only without one the first out of range. 16-bit arrays take one integer
// pass (the magnitude bits against the largest within the limit); only an array with a bad element
// is scanned again, to order the two kinds.
Napi::Value CheckFiniteHostOp(const Napi::CallbackInfo& info) {
  const char* op = "checkFiniteHost";
  ArgCount(info, 3, op);
  Napi::TypedArray a = TypedArrayArg(info, 0, op);
  const int dtype = DtypeArg(info, 1, op, "dtype");
  if (!info[2].IsNumber()) throw Napi::TypeError::New(info.Env(), "checkFiniteHost: limit must be a number");
  CheckHostArray(info, a, dtype, op);
  const int64_t at = FirstNonFinite(TypedArrayData(a), dtype, (int64_t)a.ElementLength(), info[2].As<Napi::Number>().DoubleValue(), nullptr);
  return Napi::Number::New(info.Env(), (double)at);
}

}  // namespace shadowkv_cuda
