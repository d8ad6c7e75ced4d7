// sparseAttention(q, g, d, scale, segments, nseg, total, kvDtype, tasks, out): exact attention of g
// query heads over the union of segments (runtime/wasm/sparse_attention.cc). segments: device
// table of SkvSegment (k, v addresses, n, ld); total: the sum of their n; tasks: the attentions of
// the caller's step (the keys are split as for a launch of that many: kernels/attention.h).
#include <limits.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value SparseAttention(const Napi::CallbackInfo& info) {
  const char* op = "sparseAttention";
  ArgCount(info, 10, op);
  const int g = (int)IntArg(info, 1, op, "g", INT_MIN, INT_MAX);
  const int d = (int)IntArg(info, 2, op, "d", INT_MIN, INT_MAX);
  const float scale = FloatArg(info, 3, op, "scale");
  const int nseg = (int)IntArg(info, 5, op, "nseg", 0, INT_MAX);
  const int64_t total = IntArg(info, 6, op, "total", 0, (int64_t)1 << 50);
  const bool empty = g <= 0 || d <= 0;
  const float* q = static_cast<const float*>(PtrArg(info, 0, op, "q", empty || total == 0));
  const SkvSegment* segs = static_cast<const SkvSegment*>(PtrArg(info, 4, op, "segments", empty || total == 0));
  const int kv_dtype = DtypeArg(info, 7, op, "kvDtype");
  const int tasks = (int)IntArg(info, 8, op, "tasks", 1, INT_MAX);
  float* out = static_cast<float*>(PtrArg(info, 9, op, "out", empty));
  SkvWorkspace ws{nullptr, 0};
  if (!empty && total > 0) ws = Workspace(info.Env(), WS_ATTENTION, ::SparseAttentionWorkspace(g, d, total), op);
  Check(info.Env(), op, ::SparseAttention(q, g, d, scale, segs, nseg, total, kv_dtype, tasks, out, ws, Stream()));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
