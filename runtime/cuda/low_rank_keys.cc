// lowRankKeys(K, S, D, rank, oversample, powerIters, seed, U, SV, proj, sigma) -> status:
// the truncated factorization of runtime/wasm/low_rank_keys.cc (all buffers f32, device).
// Returns SKV_OK or SKV_ERR_ARG (bad sizes or a non-finite key; nothing written); its device and
// pinned workspaces grow on first use (out of memory: a JS error with cudaCode 2).
#include <limits.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value LowRankKeys(const Napi::CallbackInfo& info) {
  const char* op = "lowRankKeys";
  ArgCount(info, 11, op);
  float* K = static_cast<float*>(PtrArg(info, 0, op, "K"));
  const int S = (int)IntArg(info, 1, op, "S", INT_MIN, INT_MAX);
  const int D = (int)IntArg(info, 2, op, "D", INT_MIN, INT_MAX);
  const int rank = (int)IntArg(info, 3, op, "rank", INT_MIN, INT_MAX);
  const int oversample = (int)IntArg(info, 4, op, "oversample", INT_MIN, INT_MAX);
  const int power_iters = (int)IntArg(info, 5, op, "powerIters", INT_MIN, INT_MAX);
  const uint32_t seed = (uint32_t)IntArg(info, 6, op, "seed", 0, UINT32_MAX);
  float* U = static_cast<float*>(PtrArg(info, 7, op, "U"));
  float* SV = static_cast<float*>(PtrArg(info, 8, op, "SV"));
  float* proj = static_cast<float*>(PtrArg(info, 9, op, "proj"));
  float* sigma = static_cast<float*>(PtrArg(info, 10, op, "sigma"));
  int status = SKV_ERR_ARG;
  // Refused sizes need no workspace (0 bytes: nothing grows), and LowRankKeys reports them.
  const SkvWorkspace ws = Workspace(info.Env(), WS_LOW_RANK, ::LowRankKeysWorkspace(S, D, rank, oversample, power_iters), op);
  const SkvWorkspace pinned = PinnedWorkspace(info.Env(), ::LowRankKeysPinned(S, D, rank, oversample, power_iters), op);
  Check(info.Env(), op, ::LowRankKeys(K, S, D, rank, oversample, power_iters, seed, U, SV, proj, sigma, ws, pinned, &status, Stream()));
  return Napi::Number::New(info.Env(), status);
}

}  // namespace shadowkv_cuda
