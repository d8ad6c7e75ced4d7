// landmarkBounds(landmarks, dtype, heads, capacity, d, headCounts): each head's landmark bound from
// scratch, into the bound words after the store's head counts (kernels/landmark_bounds.cu). CUDA
// only: the wasm runtime has no bound to keep.
#include <limits.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value LandmarkBounds(const Napi::CallbackInfo& info) {
  const char* op = "landmarkBounds";
  ArgCount(info, 6, op);
  const int dtype = DtypeArg(info, 1, op, "dtype");
  const int heads = (int)IntArg(info, 2, op, "heads", 0, 65535);
  const int capacity = (int)IntArg(info, 3, op, "capacity", 0, INT_MAX);
  const int d = (int)IntArg(info, 4, op, "d", 1, INT_MAX);
  const void* landmarks = PtrArg(info, 0, op, "landmarks", heads == 0 || capacity == 0);
  int32_t* counts = static_cast<int32_t*>(PtrArg(info, 5, op, "headCounts", heads == 0));
  Check(info.Env(), op, ::LandmarkBounds(landmarks, dtype, heads, capacity, d, counts, Stream()));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
