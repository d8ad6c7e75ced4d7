// lowRankKeys(K, S, D, rank, oversample, powerIters, seed, U, SV, proj, sigma) -> status:
// the truncated factorization of runtime/wasm/low_rank_keys.cc (all buffers f32, device).
// Returns SKV_OK or SKV_ERR_ARG (bad sizes or a non-finite key; nothing written); its device and
// pinned workspaces grow on first use (out of memory: a JS error with cudaCode 2).
// lowRankKeysAside(the same arguments) runs it on a host thread of its own and a stream of its own,
// after every op issued so far, and returns at once; joinLowRankKeysAside() waits for it, orders
// every later op after it, and returns its status (or throws its CUDA error). One at a time.
// NOTE: the factorization is a chain of host round trips (~10 ms a 128K row, the GPU mostly idle
// between them); aside, compress() computes the landmarks and outliers meanwhile (bench/NOTES.md v33).
#include <limits.h>
#include <system_error>
#include <thread>
#include "binding.h"

namespace shadowkv_cuda {

namespace {

struct LowRankCall {
  float *K, *U, *SV, *proj, *sigma;
  int S, D, rank, oversample, power_iters;
  uint32_t seed;
  SkvWorkspace ws, pinned;
  cudaError_t run(int* status, cudaStream_t stream) const {
    return ::LowRankKeys(K, S, D, rank, oversample, power_iters, seed, U, SV, proj, sigma, ws, pinned, status, stream);
  }
};

LowRankCall LowRankArgs(const Napi::CallbackInfo& info, const char* op) {
  ArgCount(info, 11, op);
  LowRankCall c{};
  c.K = static_cast<float*>(PtrArg(info, 0, op, "K"));
  c.S = (int)IntArg(info, 1, op, "S", INT_MIN, INT_MAX);
  c.D = (int)IntArg(info, 2, op, "D", INT_MIN, INT_MAX);
  c.rank = (int)IntArg(info, 3, op, "rank", INT_MIN, INT_MAX);
  c.oversample = (int)IntArg(info, 4, op, "oversample", INT_MIN, INT_MAX);
  c.power_iters = (int)IntArg(info, 5, op, "powerIters", INT_MIN, INT_MAX);
  c.seed = (uint32_t)IntArg(info, 6, op, "seed", 0, UINT32_MAX);
  c.U = static_cast<float*>(PtrArg(info, 7, op, "U"));
  c.SV = static_cast<float*>(PtrArg(info, 8, op, "SV"));
  c.proj = static_cast<float*>(PtrArg(info, 9, op, "proj"));
  c.sigma = static_cast<float*>(PtrArg(info, 10, op, "sigma"));
  // Refused sizes need no workspace (0 bytes: nothing grows), and LowRankKeys reports them.
  c.ws = Workspace(info.Env(), WS_LOW_RANK, ::LowRankKeysWorkspace(c.S, c.D, c.rank, c.oversample, c.power_iters), op);
  c.pinned = PinnedWorkspace(info.Env(), ::LowRankKeysPinned(c.S, c.D, c.rank, c.oversample, c.power_iters), op);
  return c;
}

// The factorization running aside: its thread, its stream (non-blocking: it waits for the op
// stream only through `ready`), and what it left for the join.
struct Aside {
  std::thread worker;
  bool pending = false;  // started and not joined
  cudaStream_t stream = nullptr;
  cudaEvent_t ready = nullptr, done = nullptr;
  cudaError_t err = cudaSuccess;
  int status = SKV_LOW_RANK_ARG;
  ~Aside() {
    if (worker.joinable()) worker.join();  // NOTE: a process that exits between start and join
  }
} aside;

// On the worker: the call on the aside stream, then `done` recorded. Its errors stay in aside.err
// (and out of this thread's last-error slot).
void RunAside(LowRankCall c, int dev) {
  cudaError_t err = cudaSetDevice(dev);
  if (err == cudaSuccess) err = c.run(&aside.status, aside.stream);
  if (err == cudaSuccess) err = cudaEventRecord(aside.done, aside.stream);
  if (err != cudaSuccess) cudaGetLastError();
  aside.err = err;
}

}  // namespace

Napi::Value LowRankKeys(const Napi::CallbackInfo& info) {
  const char* op = "lowRankKeys";
  // NOTE: both would use the one workspace.
  if (aside.pending) throw Napi::Error::New(info.Env(), "lowRankKeys: a factorization is running aside; join it first (joinLowRankKeysAside)");
  const LowRankCall c = LowRankArgs(info, op);
  int status = SKV_LOW_RANK_ARG;
  Check(info.Env(), op, c.run(&status, Stream()));
  return Napi::Number::New(info.Env(), status);
}

Napi::Value LowRankKeysAside(const Napi::CallbackInfo& info) {
  const char* op = "lowRankKeysAside";
  Napi::Env env = info.Env();
  if (aside.pending) throw Napi::Error::New(env, "lowRankKeysAside: a factorization is already running aside; join it first (joinLowRankKeysAside)");
  const LowRankCall c = LowRankArgs(info, op);
  if (!aside.stream) {
    Check(env, op, cudaStreamCreateWithFlags(&aside.stream, cudaStreamNonBlocking));
    Check(env, op, cudaEventCreateWithFlags(&aside.ready, cudaEventDisableTiming));
    Check(env, op, cudaEventCreateWithFlags(&aside.done, cudaEventDisableTiming));
  }
  int dev = 0;
  Check(env, op, cudaGetDevice(&dev));
  Check(env, op, cudaEventRecord(aside.ready, Stream()));
  Check(env, op, cudaStreamWaitEvent(aside.stream, aside.ready, 0));
  aside.err = cudaSuccess;
  aside.status = SKV_LOW_RANK_ARG;
  aside.pending = true;
  try {
    aside.worker = std::thread(RunAside, c, dev);
  } catch (const std::system_error&) {
    RunAside(c, dev);  // NOTE: a thread the system refuses: the call runs here, as lowRankKeys does
  }
  return env.Undefined();
}

Napi::Value JoinLowRankKeysAside(const Napi::CallbackInfo& info) {
  const char* op = "lowRankKeys";
  Napi::Env env = info.Env();
  if (!aside.pending) throw Napi::Error::New(env, "joinLowRankKeysAside: no factorization is running aside");
  if (aside.worker.joinable()) aside.worker.join();
  aside.pending = false;
  Check(env, op, aside.err);
  Check(env, op, cudaStreamWaitEvent(Stream(), aside.done, 0));
  return Napi::Number::New(env, aside.status);
}

}  // namespace shadowkv_cuda
