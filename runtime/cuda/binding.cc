// Shared pieces of the op bindings: argument readers, CUDA errors as JS errors, the workspace.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include "binding.h"

namespace shadowkv_cuda {

namespace {

// SHADOWKV_CUDA_SYNC takes 0 and 1 (unset: 0); createCudaBackend refuses any other value before
// the addon loads (cudaEnv.ts), and here only "1" turns it on, so that "false" or "no" cannot.
bool SyncEveryOp() {
  static const bool sync = [] {
    const char* v = getenv("SHADOWKV_CUDA_SYNC");
    return v && strcmp(v, "1") == 0;
  }();
  return sync;
}

[[noreturn]] void ThrowArg(Napi::Env env, const char* op, const char* name, const std::string& what) {
  throw Napi::TypeError::New(env, std::string(op) + ": argument '" + name + "' " + what);
}

double alloc_count = 0;
SkvWorkspace workspace[WS_SLOTS] = {};
SkvWorkspace pinned_ws = {};  // PinnedWorkspace

// The staging ring: a pinned block per slot and the event after the copy that last read it. Every
// slot has the same size, staging_bytes.
struct StagingSlot {
  void* ptr = nullptr;
  size_t bytes = 0;
  cudaEvent_t read = nullptr;
};
enum { STAGING_SLOTS = 32 };
StagingSlot staging[STAGING_SLOTS];
int staging_next = 0;
size_t staging_bytes = 0;

// Every slot regrown at once to twice `bytes`, after the copies that read them. NOTE: slots grown
// one by one, each when a larger upload first landed in it, kept regrowing for ~30 steps whenever
// a step's uploads did not divide the ring (q, k, v, the step record and the output read: 5 of
// 32), and cudaFreeHost waits for the device: 1 x 128K decode read ~40 us slower per step over
// its first 60 steps (H200). Now a new largest upload costs one wait, once.
void GrowStaging(Napi::Env env, size_t bytes, const char* op) {
  const size_t want = std::max<size_t>(4096, 2 * bytes);
  staging_bytes = 0;
  for (StagingSlot& s : staging) {
    if (s.read) Check(env, op, cudaEventSynchronize(s.read));
    if (s.ptr) cudaFreeHost(s.ptr);
    s.ptr = nullptr;
    s.bytes = 0;
  }
  for (StagingSlot& s : staging) {
    cudaError_t err = cudaHostAlloc(&s.ptr, want, cudaHostAllocDefault);
    if (err != cudaSuccess) {
      cudaGetLastError();
      s.ptr = nullptr;  // the slots already made stay; staging_bytes 0 regrows them all next time
      ThrowCuda(env, op, err);
    }
    CountAlloc();
    s.bytes = want;
  }
  staging_bytes = want;
}

}  // namespace

void ThrowCuda(Napi::Env env, const char* op, cudaError_t err) {
  std::string msg = std::string(op) + ": " + cudaGetErrorName(err) + " (" + std::to_string((int)err) + "): " + cudaGetErrorString(err);
  Napi::Error e = Napi::Error::New(env, msg);
  e.Value().Set("cudaCode", Napi::Number::New(env, (double)err));
  e.Value().Set("op", Napi::String::New(env, op));
  throw e;
}

void Check(Napi::Env env, const char* op, cudaError_t err) {
  if (err == cudaSuccess && SyncEveryOp()) err = cudaDeviceSynchronize();
  if (err == cudaSuccess) return;
  // NOTE: clears a non-sticky error so the next op does not report it again; faults inside a
  // kernel are sticky and leave the context unusable (every later call fails the same way).
  cudaGetLastError();
  ThrowCuda(env, op, err);
}

void ArgCount(const Napi::CallbackInfo& info, size_t n, const char* op) {
  if (info.Length() != n)
    throw Napi::TypeError::New(info.Env(), std::string(op) + ": expected " + std::to_string(n) + " arguments, got " + std::to_string(info.Length()));
}

Napi::TypedArray TypedArrayArg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (!info[i].IsTypedArray()) throw Napi::TypeError::New(info.Env(), std::string(op) + ": expected a typed array");
  return info[i].As<Napi::TypedArray>();
}

void* TypedArrayData(const Napi::TypedArray& a) {
  return static_cast<char*>(a.ArrayBuffer().Data()) + a.ByteOffset();
}

Napi::Float64Array TableArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, size_t width) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    throw Napi::TypeError::New(info.Env(), std::string(op) + ": argument '" + name + "' must be a Float64Array");
  Napi::Float64Array t = info[i].As<Napi::Float64Array>();
  if (t.ElementLength() % width)
    throw Napi::RangeError::New(info.Env(), std::string(op) + ": argument '" + name + "' holds " + std::to_string(width) +
                                                " numbers per entry, got " + std::to_string(t.ElementLength()));
  return t;
}

int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, int64_t lo, int64_t hi) {
  if (!info[i].IsNumber()) ThrowArg(info.Env(), op, name, "must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v == floor(v)) || v < (double)lo || v > (double)hi)
    ThrowArg(info.Env(), op, name, "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(v));
  return (int64_t)v;
}

float FloatArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (!info[i].IsNumber()) ThrowArg(info.Env(), op, name, "must be a number");
  return (float)info[i].As<Napi::Number>().DoubleValue();
}

void* PtrArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, bool nullable) {
  const int64_t p = IntArg(info, i, op, name, 0, (int64_t)1 << 53);
  if (p == 0 && !nullable) ThrowArg(info.Env(), op, name, "is a null address");
  return reinterpret_cast<void*>((uintptr_t)p);
}

int DtypeArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  return (int)IntArg(info, i, op, name, SKV_F32, SKV_BF16);
}

// cudaMalloc, once more after the pool gives its kept blocks back (it may keep what the device lacks).
static cudaError_t DeviceMalloc(void** p, size_t bytes) {
  cudaError_t err = cudaMalloc(p, bytes);
  if (err != cudaErrorMemoryAllocation) return err;
  cudaGetLastError();
  return TrimPool() == cudaSuccess ? cudaMalloc(p, bytes) : err;
}

// w regrown to `want` bytes of device memory, or of pinned host memory.
// NOTE: freeing synchronizes, so no kernel still uses the old block.
static SkvWorkspace Regrow(Napi::Env env, SkvWorkspace& w, size_t want, bool pinned, const char* op) {
  if (w.ptr) pinned ? cudaFreeHost(w.ptr) : cudaFree(w.ptr);
  w = SkvWorkspace{nullptr, 0};
  void* p = nullptr;
  cudaError_t err = pinned ? cudaHostAlloc(&p, want, cudaHostAllocDefault) : DeviceMalloc(&p, want);
  if (err != cudaSuccess) {
    cudaGetLastError();
    ThrowCuda(env, op, err);
  }
  CountAlloc();
  w = SkvWorkspace{p, want};
  return w;
}

SkvWorkspace Workspace(Napi::Env env, WorkspaceSlot slot, size_t bytes, const char* op) {
  SkvWorkspace& w = workspace[slot];
  if (w.bytes >= bytes) return w;
  // Grows by at least half, so that slowly growing needs do not reallocate every step.
  return Regrow(env, w, bytes > w.bytes + w.bytes / 2 ? bytes : w.bytes + w.bytes / 2, false, op);
}

SkvWorkspace PinnedWorkspace(Napi::Env env, size_t bytes, const char* op) {
  return pinned_ws.bytes >= bytes ? pinned_ws : Regrow(env, pinned_ws, bytes, true, op);
}

void* Stage(Napi::Env env, size_t bytes, const char* op) {
  if (bytes > staging_bytes) GrowStaging(env, bytes, op);
  StagingSlot& slot = staging[staging_next];
  // NOTE: waits only if the copy issued STAGING_SLOTS uploads ago has not run yet.
  if (slot.read) Check(env, op, cudaEventSynchronize(slot.read));
  else Check(env, op, cudaEventCreateWithFlags(&slot.read, cudaEventDisableTiming));
  return slot.ptr;
}

void Staged(Napi::Env env, const char* op) {
  Check(env, op, cudaEventRecord(staging[staging_next].read, Stream()));
  staging_next = (staging_next + 1) % STAGING_SLOTS;
}

const void* ReadStaged(Napi::Env env, const void* src, size_t bytes, bool by_kernel, const char* op) {
  void* staged = Stage(env, bytes, op);
  const cudaError_t err = by_kernel ? ::CopyWords(staged, src, bytes, Stream()) : cudaMemcpyAsync(staged, src, bytes, cudaMemcpyDefault, Stream());
  Staged(env, op);
  Check(env, op, err);
  Check(env, op, cudaStreamSynchronize(Stream()));
  return staged;
}

namespace {
// The decode steps' uploads: device blocks used in turn, each with a pinned block it is copied
// from, on a stream of their own. Block i's `freed` follows the last step that read it (op
// stream), `landed` its latest copy. NOTE: four, so that the host may queue a few steps ahead of
// the GPU without waiting (it waits for the copy that last read the pinned block).
enum { UPLOAD_BLOCKS = 4 };
struct StepUploads {
  cudaStream_t stream = nullptr;
  void* device[UPLOAD_BLOCKS] = {};
  void* host[UPLOAD_BLOCKS] = {};
  size_t bytes = 0;
  cudaEvent_t freed[UPLOAD_BLOCKS] = {}, landed[UPLOAD_BLOCKS] = {};
  bool read[UPLOAD_BLOCKS] = {}, copied[UPLOAD_BLOCKS] = {};  // freed / landed recorded
  int next = 0;
};
StepUploads uploads;
// Counts the changes to the blocks' contents (a growth, a step's upload, a stage): a stage's ticket
// is the count after it, good while nothing else has happened.
uint64_t upload_epoch = 0;
// What StageUpload left in the next block: its ticket, and the sizes of its n leading pieces.
struct StagedPieces {
  uint64_t ticket = 0;
  int n = 0;
  size_t bytes[3] = {};
};
StagedPieces staged;

void FreeUploads() {
  for (int i = 0; i < UPLOAD_BLOCKS; i++) {
    if (uploads.device[i]) cudaFree(uploads.device[i]);
    if (uploads.host[i]) cudaFreeHost(uploads.host[i]);
    uploads.device[i] = uploads.host[i] = nullptr;
    uploads.read[i] = uploads.copied[i] = false;
  }
  uploads.bytes = 0;
}

void GrowUploads(Napi::Env env, size_t bytes, const char* op) {
  // NOTE: a block may be read by a queued step or written by a queued copy: wait for both streams.
  Check(env, op, cudaDeviceSynchronize());
  FreeUploads();
  const size_t want = std::max<size_t>(4096, bytes + bytes / 2);
  for (int i = 0; i < UPLOAD_BLOCKS; i++) {
    void *d = nullptr, *h = nullptr;
    cudaError_t err = DeviceMalloc(&d, want);
    if (err == cudaSuccess) {
      uploads.device[i] = d;
      CountAlloc();
      err = cudaHostAlloc(&h, want, cudaHostAllocDefault);
    }
    if (err == cudaSuccess) uploads.host[i] = h;
    if (err != cudaSuccess) {
      cudaGetLastError();
      FreeUploads();
      ThrowCuda(env, op, err);
    }
    CountAlloc();
  }
  uploads.bytes = want;
  upload_epoch++;
}

// The pinned host copy of the next block, with room for `total` bytes, once the copy that last read it has run.
char* NextUpload(Napi::Env env, size_t total, const char* op) {
  if (!uploads.stream) {
    Check(env, op, cudaStreamCreateWithFlags(&uploads.stream, cudaStreamNonBlocking));
    for (int i = 0; i < UPLOAD_BLOCKS; i++) {
      Check(env, op, cudaEventCreateWithFlags(&uploads.freed[i], cudaEventDisableTiming));
      Check(env, op, cudaEventCreateWithFlags(&uploads.landed[i], cudaEventDisableTiming));
    }
  }
  if (total > uploads.bytes) GrowUploads(env, total, op);
  const int i = uploads.next;
  if (uploads.copied[i]) Check(env, op, cudaEventSynchronize(uploads.landed[i]));  // the pinned block's last copy has run
  return static_cast<char*>(uploads.host[i]);
}
}  // namespace

uint64_t StageUpload(Napi::Env env, const size_t* bytes, int n, const char* op, const std::function<bool(int k, char* at)>& copy) {
  size_t total = 0, at[3];
  for (int k = 0; k < n; k++) at[k] = skv_carve(total, bytes[k]);
  char* host = NextUpload(env, total, op);
  upload_epoch++;  // what an earlier stage left in the block is overwritten from here on
  staged = {};
  for (int k = 0; k < n; k++)
    if (!copy(k, host + at[k])) return 0;
  staged.ticket = upload_epoch;
  staged.n = n;
  for (int k = 0; k < n; k++) staged.bytes[k] = bytes[k];
  return staged.ticket;
}

char* UploadStep(Napi::Env env, const void* const* pieces, const size_t* bytes, int n, size_t* offsets, const char* op,
                 const std::function<void(char* host, char* device)>& fill, uint64_t ticket, bool* in_place) {
  size_t total = 0;
  for (int k = 0; k < n; k++) offsets[k] = skv_carve(total, bytes[k]);
  char* host = NextUpload(env, total, op);
  const int i = uploads.next;
  bool there = ticket && ticket == staged.ticket && ticket == upload_epoch && n >= staged.n;
  for (int k = 0; there && k < staged.n; k++) there = bytes[k] == staged.bytes[k];
  if (in_place) *in_place = there;
  const int first = there ? staged.n : 0;
  upload_epoch++;
  staged = {};
  for (int k = first; k < n; k++) memcpy(host + offsets[k], pieces[k], bytes[k]);
  if (fill) fill(host, static_cast<char*>(uploads.device[i]));
  // With nothing queued on the op stream (a step whose output was read back: the GPU waits for
  // this one), the copy goes on the op stream itself: nothing runs for it to overlap, and the
  // step's kernels then follow it without a wait across streams. SHADOWKV_CUDA_IDLE_UPLOAD=0 keeps
  // the upload stream always (to measure it).
  static const bool idle_upload = !skv_env_off("SHADOWKV_CUDA_IDLE_UPLOAD");
  const cudaError_t queued = idle_upload ? cudaStreamQuery(Stream()) : cudaErrorNotReady;
  if (queued != cudaErrorNotReady) Check(env, op, queued);
  const bool aside = queued != cudaSuccess;
  const cudaStream_t on = aside ? uploads.stream : Stream();
  if (aside && uploads.read[i]) Check(env, op, cudaStreamWaitEvent(on, uploads.freed[i], 0));
  Check(env, op, cudaMemcpyAsync(uploads.device[i], host, total, cudaMemcpyHostToDevice, on));
  Check(env, op, cudaEventRecord(uploads.landed[i], on));
  uploads.copied[i] = true;
  if (aside) Check(env, op, cudaStreamWaitEvent(Stream(), uploads.landed[i], 0));
  return static_cast<char*>(uploads.device[i]);
}

void StepQueued(Napi::Env env, const char* op) {
  const int i = uploads.next;
  uploads.next = (i + 1) % UPLOAD_BLOCKS;
  uploads.read[i] = true;
  Check(env, op, cudaEventRecord(uploads.freed[i], Stream()));
}

double AllocCount() { return alloc_count; }

double WorkspaceBytes() {
  double bytes = (double)UPLOAD_BLOCKS * (double)uploads.bytes;
  for (const SkvWorkspace& w : workspace) bytes += (double)w.bytes;
  return bytes;
}

double StagingBytes() {
  double bytes = 0;
  for (const StagingSlot& s : staging) bytes += (double)s.bytes;
  return bytes + (double)pinned_ws.bytes + (double)UPLOAD_BLOCKS * (double)uploads.bytes;
}
void CountAlloc() { alloc_count += 1; }

}  // namespace shadowkv_cuda
