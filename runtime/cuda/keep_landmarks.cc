// keepLandmarks(landmarks, heads, nChunks, d, outliers, counts, maxOutliers, out, dtype, ids,
// capacity): every head's chunks but its outliers, in order, to the store's landmark rows and ids
// (runtime/wasm/keep_landmarks.cc). The lists are device memory, checked by the caller.
#include <limits.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value KeepLandmarks(const Napi::CallbackInfo& info) {
  const char* op = "keepLandmarks";
  ArgCount(info, 11, op);
  const int heads = (int)IntArg(info, 1, op, "heads", 0, 65535);
  const int n_chunks = (int)IntArg(info, 2, op, "nChunks", 0, INT_MAX);
  const int d = (int)IntArg(info, 3, op, "d", 1, INT_MAX);
  const int max_outliers = (int)IntArg(info, 6, op, "maxOutliers", 0, INT_MAX);
  const int capacity = (int)IntArg(info, 10, op, "capacity", 0, INT_MAX);
  const bool empty = heads == 0 || capacity == 0;
  const float* landmarks = static_cast<const float*>(PtrArg(info, 0, op, "landmarks", empty || n_chunks == 0));
  const int32_t* outliers = static_cast<const int32_t*>(PtrArg(info, 4, op, "outliers", empty || max_outliers == 0));
  const int32_t* counts = static_cast<const int32_t*>(PtrArg(info, 5, op, "counts", empty));
  void* out = PtrArg(info, 7, op, "out", empty || n_chunks == 0);
  const int dtype = DtypeArg(info, 8, op, "dtype");
  int32_t* ids = static_cast<int32_t*>(PtrArg(info, 9, op, "ids", empty));
  Check(info.Env(), op, ::KeepLandmarks(landmarks, heads, n_chunks, d, outliers, counts, max_outliers, out, dtype, ids, capacity, Stream()));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
