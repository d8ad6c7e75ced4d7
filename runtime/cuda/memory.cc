// Devices and memory: device count, properties and selection; buffers of both tiers ('device':
// the device's stream-ordered pool; 'host': pinned, mapped memory addressed by its device pointer through UVA); copies
// between JS arrays and buffers; same-dtype copies with memmove semantics.
#include <string.h>
#include <map>
#include <unordered_map>
#include <vector>
#include <algorithm>
#include <cuda.h>  // CUresult and CUdeviceptr, for cuMemGetAddressRange's type only: the addon does not link libcuda
#include "binding.h"

namespace shadowkv_cuda {

namespace {

// Host-tier blocks: device address -> host address (cudaFreeHost takes the host one) and size.
struct HostBlock {
  void* host;
  size_t bytes;
};
std::map<uintptr_t, HostBlock> host_blocks;  // ordered: readHost finds the block that holds an address
// The output block (outputBlock): pinned and mapped, one per process, grown, never shrunk.
HostBlock out_block{nullptr, 0};
uintptr_t out_device = 0;
// Device-tier blocks: address -> size, so that memoryStats() counts what is held without the JS side.
std::unordered_map<uintptr_t, size_t> device_blocks;

// The current device's default memory pool, set (once per device) to keep what is freed into it.
// NOTE: compress() allocates and frees ~0.6 GB of temporaries a 128K row, and a store's buffers; by
// cudaMalloc and cudaFree (which waits for the whole device) that was ~3 ms of the ~25 (bench/NOTES.md
// v20). Kept blocks are given back by TrimPool, where the memory the GPU has free is asked for and at dispose.
cudaError_t KeepingPool(cudaMemPool_t* pool) {
  static std::vector<bool> kept;
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetDefaultMemPool(pool, dev);
  if (err != cudaSuccess) return err;
  if ((int)kept.size() <= dev) kept.resize(dev + 1, false);
  if (kept[dev]) return cudaSuccess;
  uint64_t keep = UINT64_MAX;
  err = cudaMemPoolSetAttribute(*pool, cudaMemPoolAttrReleaseThreshold, &keep);
  kept[dev] = err == cudaSuccess;
  return err;
}

}  // namespace

// Gives the blocks freed into the current device's pool back to the device, once every op issued
// so far has run (a free is done only in stream order).
cudaError_t TrimPool() {
  cudaMemPool_t pool;
  cudaError_t err = KeepingPool(&pool);
  if (err == cudaSuccess) err = cudaDeviceSynchronize();
  return err == cudaSuccess ? cudaMemPoolTrimTo(pool, 0) : err;
}

// trimPool(): what TrimPool does (CudaDevice.dispose calls it after freeing its buffers).
Napi::Value TrimPoolOp(const Napi::CallbackInfo& info) {
  ArgCount(info, 0, "trimPool");
  Check(info.Env(), "trimPool", TrimPool());
  return info.Env().Undefined();
}

// deviceCount(): CUDA devices visible to this process; throws (with cudaCode) when CUDA cannot
// start: no driver / too old (35), no device (100), and so on. Never crashes without a driver.
Napi::Value DeviceCount(const Napi::CallbackInfo& info) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    ThrowCuda(info.Env(), "deviceCount", err);
  }
  return Napi::Number::New(info.Env(), n);
}

// deviceInfo(ordinal): { name, major, minor, multiprocessors, totalBytes, driverVersion, runtimeVersion }.
Napi::Value DeviceInfo(const Napi::CallbackInfo& info) {
  ArgCount(info, 1, "deviceInfo");
  const int dev = (int)IntArg(info, 0, "deviceInfo", "ordinal", 0, 1 << 20);
  cudaDeviceProp prop;
  Check(info.Env(), "deviceInfo", cudaGetDeviceProperties(&prop, dev));
  int driver = 0, runtime = 0;
  Check(info.Env(), "deviceInfo", cudaDriverGetVersion(&driver));
  Check(info.Env(), "deviceInfo", cudaRuntimeGetVersion(&runtime));
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("name", Napi::String::New(info.Env(), prop.name));
  o.Set("major", Napi::Number::New(info.Env(), prop.major));
  o.Set("minor", Napi::Number::New(info.Env(), prop.minor));
  o.Set("multiprocessors", Napi::Number::New(info.Env(), prop.multiProcessorCount));
  o.Set("totalBytes", Napi::Number::New(info.Env(), (double)prop.totalGlobalMem));
  o.Set("driverVersion", Napi::Number::New(info.Env(), driver));
  o.Set("runtimeVersion", Napi::Number::New(info.Env(), runtime));
  return o;
}

// setDevice(ordinal): every later call of this process runs on that device.
Napi::Value SetDevice(const Napi::CallbackInfo& info) {
  ArgCount(info, 1, "setDevice");
  Check(info.Env(), "setDevice", cudaSetDevice((int)IntArg(info, 0, "setDevice", "ordinal", 0, 1 << 20)));
  return info.Env().Undefined();
}

// selfTest(ordinal): runs one tiny kernel there; fails with 209 when the binary has no code for the GPU.
Napi::Value SelfTestOp(const Napi::CallbackInfo& info) {
  ArgCount(info, 1, "selfTest");
  Check(info.Env(), "selfTest", cudaSetDevice((int)IntArg(info, 0, "selfTest", "ordinal", 0, 1 << 20)));
  Check(info.Env(), "selfTest", ::SelfTest(Stream()));
  return info.Env().Undefined();
}

// malloc(bytes) -> device address of a zeroed 'device'-tier block.
Napi::Value Malloc(const Napi::CallbackInfo& info) {
  ArgCount(info, 1, "malloc");
  const size_t bytes = (size_t)IntArg(info, 0, "malloc", "bytes", 1, (int64_t)1 << 50);
  void* p = nullptr;
  cudaMemPool_t pool;
  Check(info.Env(), "malloc", KeepingPool(&pool));
  cudaError_t err = cudaMallocFromPoolAsync(&p, bytes, pool, Stream());
  if (err == cudaErrorMemoryAllocation) {  // the blocks the pool keeps may each be too small: give them back to the device, try again
    cudaGetLastError();
    Check(info.Env(), "malloc", TrimPool());
    err = cudaMallocFromPoolAsync(&p, bytes, pool, Stream());
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    ThrowCuda(info.Env(), "malloc", err);
  }
  CountAlloc();
  // NOTE: zeroed like fresh wasm memory, so that nothing depends on what a freed block held.
  err = cudaMemsetAsync(p, 0, bytes, Stream());
  if (err != cudaSuccess) {
    cudaFreeAsync(p, Stream());
    Check(info.Env(), "malloc", err);
  }
  device_blocks[(uintptr_t)p] = bytes;
  return Napi::Number::New(info.Env(), (double)(uintptr_t)p);
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  ArgCount(info, 1, "free");
  void* p = PtrArg(info, 0, "free", "ptr");
  device_blocks.erase((uintptr_t)p);
  // NOTE: in stream order: a block is reused only by ops issued after this one (copies on the second
  // stream are joined before their sources are freed: copyAside's contract).
  Check(info.Env(), "free", cudaFreeAsync(p, Stream()));
  return info.Env().Undefined();
}

// hostAlloc(bytes) -> device address of a zeroed 'host'-tier block (pinned, mapped: kernels read it over PCIe).
Napi::Value HostAlloc(const Napi::CallbackInfo& info) {
  ArgCount(info, 1, "hostAlloc");
  const size_t bytes = (size_t)IntArg(info, 0, "hostAlloc", "bytes", 1, (int64_t)1 << 50);
  void* h = nullptr;
  cudaError_t err = cudaHostAlloc(&h, bytes, cudaHostAllocMapped | cudaHostAllocPortable);
  if (err != cudaSuccess) {
    cudaGetLastError();
    ThrowCuda(info.Env(), "hostAlloc", err);
  }
  CountAlloc();
  memset(h, 0, bytes);
  void* d = nullptr;
  err = cudaHostGetDevicePointer(&d, h, 0);
  if (err != cudaSuccess) {
    cudaFreeHost(h);
    Check(info.Env(), "hostAlloc", err);
  }
  host_blocks[(uintptr_t)d] = HostBlock{h, bytes};
  return Napi::Number::New(info.Env(), (double)(uintptr_t)d);
}

Napi::Value FreeHost(const Napi::CallbackInfo& info) {
  ArgCount(info, 1, "freeHost");
  const uintptr_t d = (uintptr_t)PtrArg(info, 0, "freeHost", "ptr");
  auto it = host_blocks.find(d);
  if (it == host_blocks.end()) throw Napi::RangeError::New(info.Env(), "freeHost: not a host-tier block of this addon");
  void* h = it->second.host;
  host_blocks.erase(it);
  Check(info.Env(), "freeHost", cudaFreeHost(h));  // NOTE: waits for kernels that may still read it
  return info.Env().Undefined();
}

// The largest piece of a write, and the largest read, that go through the pinned staging ring (a
// decode step's output, a device tensor's write, a composed step's inputs); a write of up to
// STAGED_PIECES pieces goes up piece by piece, larger ones and larger reads are a plain synchronous
// copy. NOTE: a synchronous copy waits for every kernel queued before it: at 43 x 128K the step's
// 1.06 MB q | k | v upload (then a write), one byte past a single piece, kept the host from
// queueing ahead (2.24 -> 2.51 ms a step, H200).
constexpr size_t STAGED_MAX_BYTES = 1u << 20;
constexpr size_t STAGED_PIECES = 8;
double sync_copies = 0;  // writes and reads past the staged sizes so far (memoryStats)

// write(ptr, array): the array's bytes to the buffer at ptr (either tier). A staged write returns
// without waiting for the GPU.
Napi::Value Write(const Napi::CallbackInfo& info) {
  ArgCount(info, 2, "write");
  char* dst = static_cast<char*>(PtrArg(info, 0, "write", "ptr"));
  Napi::TypedArray a = TypedArrayArg(info, 1, "write");
  const size_t bytes = a.ByteLength();
  const char* src = static_cast<const char*>(TypedArrayData(a));
  if (bytes == 0) return info.Env().Undefined();
  if (bytes > STAGED_PIECES * STAGED_MAX_BYTES) {
    sync_copies += 1;
    Check(info.Env(), "write", cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
    return info.Env().Undefined();
  }
  for (size_t off = 0; off < bytes; off += STAGED_MAX_BYTES) {
    const size_t n = std::min(STAGED_MAX_BYTES, bytes - off);
    void* staged = Stage(info.Env(), n, "write");
    memcpy(staged, src + off, n);
    cudaError_t err = cudaMemcpyAsync(dst + off, staged, n, cudaMemcpyDefault, Stream());
    Staged(info.Env(), "write");
    Check(info.Env(), "write", err);
  }
  return info.Env().Undefined();
}

// read(ptr, array): fills the array from the buffer at ptr; waits for every op before it.
// Small reads (a decode step's output) go through a pinned staging block: a copy into pageable
// memory is staged by the driver in pieces, slower for the step's tens of KB.
Napi::Value Read(const Napi::CallbackInfo& info) {
  ArgCount(info, 2, "read");
  const void* src = PtrArg(info, 0, "read", "ptr");
  Napi::TypedArray a = TypedArrayArg(info, 1, "read");
  const size_t bytes = a.ByteLength();
  if (bytes == 0) return info.Env().Undefined();
  if (bytes > STAGED_MAX_BYTES) {
    sync_copies += 1;
    Check(info.Env(), "read", cudaMemcpy(TypedArrayData(a), src, bytes, cudaMemcpyDefault));
    return info.Env().Undefined();
  }
  memcpy(TypedArrayData(a), ReadStaged(info.Env(), src, bytes, false, "read"), bytes);
  return info.Env().Undefined();
}

// outputBlock(bytes) -> the device address of the process's output block, grown to `bytes` where
// smaller (the old one freed, after every op: a failed step may have left kernels writing it). A
// decode step's kernels write an output bound for a host array there (CudaDevice.hostOutput), which
// readHost returns before the step's call does, so one block serves every cache of the process.
// Counted in memoryStats' stagingBytes, not in any cache's memory().
Napi::Value OutputBlock(const Napi::CallbackInfo& info) {
  const char* op = "outputBlock";
  ArgCount(info, 1, op);
  const size_t bytes = (size_t)IntArg(info, 0, op, "bytes", 1, (int64_t)1 << 40);
  if (bytes <= out_block.bytes) return Napi::Number::New(info.Env(), (double)out_device);
  Check(info.Env(), op, cudaDeviceSynchronize());
  if (out_block.host) Check(info.Env(), op, cudaFreeHost(out_block.host));
  out_block = {nullptr, 0};
  out_device = 0;
  const size_t want = std::max<size_t>(bytes, 64 << 10);
  void *h = nullptr, *d = nullptr;
  cudaError_t err = cudaHostAlloc(&h, want, cudaHostAllocMapped | cudaHostAllocPortable);
  if (err == cudaSuccess) err = cudaHostGetDevicePointer(&d, h, 0);
  if (err != cudaSuccess) {
    if (h) cudaFreeHost(h);
    cudaGetLastError();
    ThrowCuda(info.Env(), op, err);
  }
  CountAlloc();
  out_block = {h, want};
  out_device = (uintptr_t)d;
  return Napi::Number::New(info.Env(), (double)out_device);
}

// readHost(ptr, array): fills the array from the 'host'-tier block (or the output block) that holds
// ptr, once every op before has run: a wait and a memcpy, no copy on the GPU's engines. For what
// kernels wrote there over PCIe (a decode step's output read back), where read's copy back queues
// behind the step's last kernel (bench/NOTES.md v51: ~3-6 us of a 4 x 128K step's wall).
Napi::Value ReadHost(const Napi::CallbackInfo& info) {
  const char* op = "readHost";
  ArgCount(info, 2, op);
  const uintptr_t src = (uintptr_t)PtrArg(info, 0, op, "ptr");
  Napi::TypedArray a = TypedArrayArg(info, 1, op);
  const size_t bytes = a.ByteLength();
  const char* from = nullptr;
  if (out_device && src >= out_device && src + bytes <= out_device + out_block.bytes) {
    from = static_cast<const char*>(out_block.host) + (src - out_device);
  } else {
    auto it = host_blocks.upper_bound(src);
    if (it != host_blocks.begin() && (--it, src + bytes <= it->first + it->second.bytes))
      from = static_cast<const char*>(it->second.host) + (src - it->first);
  }
  if (!from) throw Napi::RangeError::New(info.Env(), "readHost: " + std::to_string(bytes) + " bytes from that address are not within one host-tier block of this addon");
  Check(info.Env(), op, cudaStreamSynchronize(Stream()));
  if (bytes) memcpy(TypedArrayData(a), from, bytes);
  return info.Env().Undefined();
}

// copy(dst, src, bytes): memmove between buffers of either tier (overlap goes through a workspace).
Napi::Value Copy(const Napi::CallbackInfo& info) {
  ArgCount(info, 3, "copy");
  char* dst = static_cast<char*>(PtrArg(info, 0, "copy", "dst"));
  const char* src = static_cast<const char*>(PtrArg(info, 1, "copy", "src"));
  const size_t bytes = (size_t)IntArg(info, 2, "copy", "bytes", 0, (int64_t)1 << 50);
  if (bytes == 0 || dst == src) return info.Env().Undefined();
  const bool overlap = dst < src + bytes && src < dst + bytes;
  if (!overlap) {
    Check(info.Env(), "copy", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, Stream()));
    return info.Env().Undefined();
  }
  SkvWorkspace tmp = Workspace(info.Env(), WS_COPY, bytes, "copy");
  Check(info.Env(), "copy", cudaMemcpyAsync(tmp.ptr, src, bytes, cudaMemcpyDefault, Stream()));
  Check(info.Env(), "copy", cudaMemcpyAsync(dst, tmp.ptr, bytes, cudaMemcpyDefault, Stream()));
  return info.Env().Undefined();
}

// Copies alongside: a second stream that the copy engines serve while kernels run on the first.
// It does not wait for the legacy stream by itself (non-blocking), so copyAside orders it after
// every op issued so far with an event, and joinAside orders every later op after its copies.
namespace {
struct Aside {
  cudaStream_t stream = nullptr;
  cudaEvent_t ready = nullptr, done = nullptr;  // main -> aside; aside -> main
};
Aside aside;

void StartAside(Napi::Env env, const char* op) {
  if (aside.stream) return;
  Check(env, op, cudaStreamCreateWithFlags(&aside.stream, cudaStreamNonBlocking));
  Check(env, op, cudaEventCreateWithFlags(&aside.ready, cudaEventDisableTiming));
  Check(env, op, cudaEventCreateWithFlags(&aside.done, cudaEventDisableTiming));
}
}  // namespace

// copyAside(table): copies [dst, src, bytes] (a Float64Array of triples; no copy may overlap its
// source) on the second stream, after every op issued before; returns at once. Until joinAside,
// nothing may write the sources or touch the destinations.
Napi::Value CopyAside(const Napi::CallbackInfo& info) {
  const char* op = "copyAside";
  ArgCount(info, 1, op);
  Napi::Float64Array t = TableArg(info, 0, op, "table", 3);  // [dst, src, bytes] triples
  StartAside(info.Env(), op);
  Check(info.Env(), op, cudaEventRecord(aside.ready, Stream()));
  Check(info.Env(), op, cudaStreamWaitEvent(aside.stream, aside.ready, 0));
  for (size_t i = 0; i < t.ElementLength(); i += 3) {
    char* dst = reinterpret_cast<char*>((uintptr_t)t[i]);
    const char* src = reinterpret_cast<const char*>((uintptr_t)t[i + 1]);
    const size_t bytes = (size_t)t[i + 2];
    if (bytes == 0) continue;
    if (!dst || !src) throw Napi::RangeError::New(info.Env(), "copyAside: a null address in copy " + std::to_string(i / 3));
    if (dst < src + bytes && src < dst + bytes)
      throw Napi::RangeError::New(info.Env(), "copyAside: copy " + std::to_string(i / 3) + " overlaps its source");
    Check(info.Env(), op, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, aside.stream));
  }
  return info.Env().Undefined();
}

// joinAside(): every op issued after this waits for the copies issued by copyAside before it.
Napi::Value JoinAside(const Napi::CallbackInfo& info) {
  const char* op = "joinAside";
  ArgCount(info, 0, op);
  if (!aside.stream) return info.Env().Undefined();
  Check(info.Env(), op, cudaEventRecord(aside.done, aside.stream));
  Check(info.Env(), op, cudaStreamWaitEvent(Stream(), aside.done, 0));
  return info.Env().Undefined();
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  Check(info.Env(), "synchronize", cudaDeviceSynchronize());
  return info.Env().Undefined();
}

// memInfo(): { free, total } bytes of the current device.
Napi::Value MemInfo(const Napi::CallbackInfo& info) {
  size_t free_b = 0, total = 0;
  Check(info.Env(), "memInfo", TrimPool());  // what the pool keeps is free to every caller
  Check(info.Env(), "memInfo", cudaMemGetInfo(&free_b, &total));
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("free", Napi::Number::New(info.Env(), (double)free_b));
  o.Set("total", Napi::Number::New(info.Env(), (double)total));
  return o;
}

Napi::Value AllocCountOp(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), AllocCount()); }

// memoryStats(): what this process holds through the addon, counted here rather than by the JS
// ledger: { deviceBlocks, deviceBytes, hostBlocks, hostBytes } of malloc/hostAlloc not yet freed,
// and the per-process blocks ops keep between calls: workspaceBytes (device) and stagingBytes (pinned);
// syncCopies: the writes and reads so far too large for the staging ring (each waited for the GPU).
Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  double device = 0, host = 0;
  for (const auto& b : device_blocks) device += (double)b.second;
  for (const auto& b : host_blocks) host += (double)b.second.bytes;
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("deviceBlocks", Napi::Number::New(info.Env(), (double)device_blocks.size()));
  o.Set("deviceBytes", Napi::Number::New(info.Env(), device));
  o.Set("hostBlocks", Napi::Number::New(info.Env(), (double)host_blocks.size()));
  o.Set("hostBytes", Napi::Number::New(info.Env(), host));
  o.Set("workspaceBytes", Napi::Number::New(info.Env(), WorkspaceBytes()));
  o.Set("syncCopies", Napi::Number::New(info.Env(), sync_copies));
  o.Set("stagingBytes", Napi::Number::New(info.Env(), StagingBytes() + (double)out_block.bytes));
  return o;
}

namespace {
// The allocation that holds ptr, from the driver's cuMemGetAddressRange, reached through the
// runtime (cudaGetDriverEntryPointByVersion): false where the driver cannot say (no such entry
// point, or memory it does not track as one range, e.g. of another device).
bool AllocationRange(void* ptr, uint64_t* base, size_t* size) {
  using Fn = CUresult (*)(CUdeviceptr*, size_t*, CUdeviceptr);
  static const Fn range = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &f, 12000, cudaEnableDefault, &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return (Fn) nullptr;
    }
    return reinterpret_cast<Fn>(f);
  }();
  CUdeviceptr b = 0;
  size_t n = 0;
  if (!range || range(&b, &n, (CUdeviceptr)(uintptr_t)ptr) != CUDA_SUCCESS) return false;
  *base = (uint64_t)b;
  *size = n;
  return true;
}
}  // namespace

// pointerInfo(ptr): { type, device, base, size } from cudaPointerGetAttributes: type 0 unregistered
// host memory, 1 registered host, 2 device, 3 managed; device the ordinal (-1 when none); for device
// and managed memory of the current device, the allocation that holds ptr (base address and bytes;
// -1 and -1 where the driver cannot say). Never throws for an unknown address (older drivers report
// cudaErrorInvalidValue: cleared, type 0).
Napi::Value PointerInfo(const Napi::CallbackInfo& info) {
  ArgCount(info, 1, "pointerInfo");
  void* ptr = PtrArg(info, 0, "pointerInfo", "ptr");
  cudaPointerAttributes a;
  memset(&a, 0, sizeof a);
  cudaError_t err = cudaPointerGetAttributes(&a, ptr);
  if (err != cudaSuccess) {
    cudaGetLastError();
    a.type = cudaMemoryTypeUnregistered;
    a.device = -1;
  }
  int dev = -1;
  uint64_t base = 0;
  size_t size = 0;
  const bool device_memory = a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
  const bool ranged = device_memory && cudaGetDevice(&dev) == cudaSuccess && dev == a.device && AllocationRange(ptr, &base, &size);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("type", Napi::Number::New(info.Env(), (double)a.type));
  o.Set("device", Napi::Number::New(info.Env(), a.type == cudaMemoryTypeUnregistered ? -1.0 : (double)a.device));
  o.Set("base", Napi::Number::New(info.Env(), ranged ? (double)base : -1.0));
  o.Set("size", Napi::Number::New(info.Env(), ranged ? (double)size : -1.0));
  return o;
}

// Timing events (benchmarks): eventRecord() records an event on the stream and returns its id;
// eventElapsed(a, b) waits for b and returns the milliseconds between them; eventRelease(id).
namespace {
std::unordered_map<int, cudaEvent_t> events;
int next_event = 1;
cudaEvent_t EventArg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  auto it = events.find((int)IntArg(info, i, op, "event", 1, INT32_MAX));
  if (it == events.end()) throw Napi::RangeError::New(info.Env(), std::string(op) + ": no such event");
  return it->second;
}
}  // namespace

Napi::Value EventRecord(const Napi::CallbackInfo& info) {
  cudaEvent_t e;
  Check(info.Env(), "eventRecord", cudaEventCreate(&e));
  Check(info.Env(), "eventRecord", cudaEventRecord(e, Stream()));
  events[next_event] = e;
  return Napi::Number::New(info.Env(), next_event++);
}

Napi::Value EventElapsed(const Napi::CallbackInfo& info) {
  ArgCount(info, 2, "eventElapsed");
  cudaEvent_t a = EventArg(info, 0, "eventElapsed"), b = EventArg(info, 1, "eventElapsed");
  Check(info.Env(), "eventElapsed", cudaEventSynchronize(b));
  float ms = 0.f;
  Check(info.Env(), "eventElapsed", cudaEventElapsedTime(&ms, a, b));
  return Napi::Number::New(info.Env(), ms);
}

Napi::Value EventRelease(const Napi::CallbackInfo& info) {
  ArgCount(info, 1, "eventRelease");
  cudaEvent_t e = EventArg(info, 0, "eventRelease");
  events.erase((int)info[0].As<Napi::Number>().Int32Value());
  Check(info.Env(), "eventRelease", cudaEventDestroy(e));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
