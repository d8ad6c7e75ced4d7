// selectChunks(scores, n, k, largest, out) -> count: the top min(k, n) indices of scores[n]
// (device f32), written ascending into `out` (an Int32Array of at least that length).
// NOTE: ties go to the lower index and NaN ranks last, so CUDA selects exactly the wasm set
// (runtime/wasm/select_chunks.cc). The Device API is synchronous: this waits for the indices.
#include <limits.h>
#include <string.h>
#include <vector>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value SelectChunks(const Napi::CallbackInfo& info) {
  const char* op = "selectChunks";
  ArgCount(info, 5, op);
  const int n = (int)IntArg(info, 1, op, "n", INT_MIN, INT_MAX);
  const int k = (int)IntArg(info, 2, op, "k", INT_MIN, INT_MAX);
  const int m = k < n ? k : n;
  const float* scores = static_cast<const float*>(PtrArg(info, 0, op, "scores", m <= 0));
  const int largest = (int)IntArg(info, 3, op, "largest", 0, 1);
  if (!info[4].IsTypedArray() || info[4].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw Napi::TypeError::New(info.Env(), "selectChunks: argument 'out' must be an Int32Array");
  Napi::Int32Array out = info[4].As<Napi::Int32Array>();
  if (m <= 0) return Napi::Number::New(info.Env(), 0);
  if (out.ElementLength() < (size_t)m) throw Napi::RangeError::New(info.Env(), "selectChunks: 'out' holds fewer than min(k, n) indices");
  // Workspace: [m] indices then the count.
  SkvWorkspace ws = Workspace(info.Env(), WS_SELECT, sizeof(int32_t) * ((size_t)m + 1), op);
  int32_t* idx = static_cast<int32_t*>(ws.ptr);
  int32_t* count = idx + m;
  Check(info.Env(), op, ::SelectChunks(scores, n, k, largest, idx, count, Stream()));
  // One copy back of the indices and the count (each copy waits for the GPU: 8 heads' outlier choice is 8 of these in a compression).
  std::vector<int32_t> back((size_t)m + 1);
  Check(info.Env(), op, cudaMemcpy(back.data(), idx, sizeof(int32_t) * ((size_t)m + 1), cudaMemcpyDeviceToHost));
  if (back[m] != m) throw Napi::Error::New(info.Env(), "selectChunks: the device selected " + std::to_string(back[m]) + " of " + std::to_string(m) + " indices");
  memcpy(out.Data(), back.data(), sizeof(int32_t) * (size_t)m);  // ascending
  return Napi::Number::New(info.Env(), m);
}

}  // namespace shadowkv_cuda
