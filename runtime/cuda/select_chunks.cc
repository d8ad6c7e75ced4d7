// selectChunks(scores, n, k, largest, rows, out) -> count: for each of `rows` rows of scores[n]
// (device f32, row r at scores + r * n), the top m = min(k, n) indices, written ascending into
// out[r * m ...] (an Int32Array of at least rows * m). Returns m.
// NOTE: ties go to the lower index and NaN ranks last, so CUDA selects exactly the wasm set
// (runtime/wasm/select_chunks.cc). The Device API is synchronous: this waits for the indices, once
// for all rows (a compression's eight heads' outlier choices were eight waits).
#include <limits.h>
#include <string.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value SelectChunks(const Napi::CallbackInfo& info) {
  const char* op = "selectChunks";
  ArgCount(info, 6, op);
  const int n = (int)IntArg(info, 1, op, "n", INT_MIN, INT_MAX);
  const int k = (int)IntArg(info, 2, op, "k", INT_MIN, INT_MAX);
  const int rows = (int)IntArg(info, 4, op, "rows", 0, INT_MAX);
  const int m = k < n ? k : n;
  const float* scores = static_cast<const float*>(PtrArg(info, 0, op, "scores", m <= 0 || rows == 0));
  const int largest = (int)IntArg(info, 3, op, "largest", 0, 1);
  if (!info[5].IsTypedArray() || info[5].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw Napi::TypeError::New(info.Env(), "selectChunks: argument 'out' must be an Int32Array");
  Napi::Int32Array out = info[5].As<Napi::Int32Array>();
  if (m <= 0 || rows == 0) return Napi::Number::New(info.Env(), m > 0 ? m : 0);
  const size_t total = (size_t)rows * m;
  if (out.ElementLength() < total) throw Napi::RangeError::New(info.Env(), "selectChunks: 'out' holds fewer than rows x min(k, n) indices");
  if (rows > 0x7fffffff / 2) throw Napi::RangeError::New(info.Env(), "selectChunks: too many rows");
  // Workspace: [rows * m] indices then the rows' counts.
  SkvWorkspace ws = Workspace(info.Env(), WS_SELECT, sizeof(int32_t) * (total + rows), op);
  int32_t* idx = static_cast<int32_t*>(ws.ptr);
  int32_t* count = idx + total;
  Check(info.Env(), op, ::SelectChunks(scores, n, k, largest, rows, idx, count, Stream()));
  // One copy back of the indices and the counts, by a kernel. NOTE: a cudaMemcpy queued on the copy
  // engine behind compress()'s value copies (~6 ms a 128K row), and the factorization running aside
  // meanwhile stalled ~3.5 ms with it (bench/NOTES.md v33, call 6).
  const int32_t* back = static_cast<const int32_t*>(ReadStaged(info.Env(), idx, sizeof(int32_t) * (total + rows), true, op));
  for (int r = 0; r < rows; r++)
    if (back[total + r] != m)
      throw Napi::Error::New(info.Env(), "selectChunks: the device selected " + std::to_string(back[total + r]) + " of " + std::to_string(m) +
                                             " indices in row " + std::to_string(r));
  memcpy(out.Data(), back, sizeof(int32_t) * total);  // ascending within each row
  return Napi::Number::New(info.Env(), m);
}

}  // namespace shadowkv_cuda
