// rebuildKeys(U, uDtype, rank, SVh, svDtype, ldsv, d, chunkIds, slots, nChunks, C, invFreq, style,
// out, outDtype, ldo): rows of selected chunks = RoPE(U[pos] . SVh) into their slots
// (runtime/wasm/rebuild_keys.cc). chunkIds, slots: device i32 [nChunks] (slots may be 0: slot i).
#include <limits.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value RebuildKeys(const Napi::CallbackInfo& info) {
  const char* op = "rebuildKeys";
  ArgCount(info, 16, op);
  const int n_chunks = (int)IntArg(info, 9, op, "nChunks", INT_MIN, INT_MAX);
  const int C = (int)IntArg(info, 10, op, "C", INT_MIN, INT_MAX);
  const int d = (int)IntArg(info, 6, op, "d", INT_MIN, INT_MAX);
  const bool empty = n_chunks <= 0 || C <= 0 || d < 2;
  const int rank = (int)IntArg(info, 2, op, "rank", 0, INT_MAX);
  const void* U = PtrArg(info, 0, op, "U", empty || rank == 0);
  const int u_dtype = DtypeArg(info, 1, op, "uDtype");
  const void* SVh = PtrArg(info, 3, op, "SVh", empty || rank == 0);
  const int sv_dtype = DtypeArg(info, 4, op, "svDtype");
  const int64_t ldsv = IntArg(info, 5, op, "ldsv", 0, INT_MAX);
  const int32_t* ids = static_cast<const int32_t*>(PtrArg(info, 7, op, "chunkIds", empty));
  const int32_t* slots = static_cast<const int32_t*>(PtrArg(info, 8, op, "slots", true));
  const double* inv_freq = static_cast<const double*>(PtrArg(info, 11, op, "invFreq", empty));
  const int style = (int)IntArg(info, 12, op, "style", SKV_ROPE_HALF, SKV_ROPE_INTERLEAVED);
  void* out = PtrArg(info, 13, op, "out", empty);
  const int out_dtype = DtypeArg(info, 14, op, "outDtype");
  const int64_t ldo = IntArg(info, 15, op, "ldo", 0, INT_MAX);
  if ((int64_t)n_chunks * C > INT_MAX) throw Napi::RangeError::New(info.Env(), "rebuildKeys: more rows than 2^31");
  Check(info.Env(), op, ::RebuildKeys(U, u_dtype, rank, SVh, sv_dtype, ldsv, d, ids, slots, n_chunks, C, inv_freq, style, out, out_dtype, ldo, Stream()));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
