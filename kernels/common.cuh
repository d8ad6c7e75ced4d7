// Helpers shared by the kernels: error propagation, grid sizes, warp reductions and the exp of
// runtime/wasm/simd.h (exactly 0 below -87.3, so masked -inf logits stay masked).
#pragma once
#include <cuda_runtime.h>
#include <algorithm>
#include <mutex>
#include <utility>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "launchers.h"

// Returns early from a launcher with the first CUDA error (FLASHINFER_CUDA_CALL).
#define SKV_CUDA_CALL(expr)                 \
  do {                                      \
    cudaError_t skv_err_ = (expr);          \
    if (skv_err_ != cudaSuccess) return skv_err_; \
  } while (0)

// The error of the launch just made (configuration errors show here, faults at the next sync).
#define SKV_LAUNCH_CHECK() SKV_CUDA_CALL(cudaGetLastError())

static inline int64_t skv_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The most blocks a grid's y (or z) may have; grid-stride launches never need more than this.
enum { SKV_MAX_BLOCKS = 65535 };

// The dynamic shared memory a kernel may take on a device (this file's launches), 0 until read
// from the driver; or a slot that stays 0 once the table is full. Thread-safe: compress() runs
// lowRankKeys on a thread of its own (runtime/cuda/low_rank_keys.cc) while the landmarks launch;
// lookups read without the lock, entries are added under it and published by the count.
static inline size_t& skv_smem_granted(const void* kernel, int dev) {
  struct Grant {
    const void* kernel;
    int dev;
    size_t bytes;
  };
  static Grant table[64];
  static int n = 0;
  static size_t none = 0;
  static std::mutex adding;
  const auto find = [&](int count) -> size_t* {
    for (int i = 0; i < count; i++)
      if (table[i].kernel == kernel && table[i].dev == dev) return &table[i].bytes;
    return nullptr;
  };
  if (size_t* b = find(__atomic_load_n(&n, __ATOMIC_ACQUIRE))) return *b;
  std::lock_guard<std::mutex> lock(adding);
  const int count = __atomic_load_n(&n, __ATOMIC_RELAXED);
  if (size_t* b = find(count)) return *b;
  if (count == 64) return none = 0;
  table[count] = Grant{kernel, dev, 0};
  __atomic_store_n(&n, count + 1, __ATOMIC_RELEASE);
  return table[count].bytes;
}

// A block of `kernel` with `bytes` of dynamic shared memory: *need, those bytes and the kernel's
// static shared memory; *limit, the most a block may have on the current device (opted in).
template <typename Kernel>
static inline cudaError_t skv_smem_need(Kernel kernel, size_t bytes, size_t* need, size_t* limit) {
  int dev = 0, optin = 0;
  SKV_CUDA_CALL(cudaGetDevice(&dev));
  cudaFuncAttributes fa{};
  SKV_CUDA_CALL(cudaFuncGetAttributes(&fa, kernel));
  SKV_CUDA_CALL(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  *need = fa.sharedSizeBytes + bytes;
  *limit = (size_t)optin;
  return cudaSuccess;
}

// Records in *fit (if nothing is there yet) a launch of `kernel` named `name` whose `bytes` of
// dynamic shared memory do not fit a block on the current device (SpecFits).
template <typename Kernel>
static inline cudaError_t skv_smem_fit(Kernel kernel, size_t bytes, const char* name, SkvSmemFit* fit) {
  size_t need = 0, limit = 0;
  SKV_CUDA_CALL(skv_smem_need(kernel, bytes, &need, &limit));
  if (need > limit && !fit->kernel) *fit = SkvSmemFit{name, need, limit};
  return cudaSuccess;
}

// Allows a kernel `bytes` of dynamic shared memory, raising its limit where it needs it. NOTE: the
// default limit is 48 KB less the kernel's static shared memory, not 48 KB: a select cluster's
// block with 19 KB of static state and 37 KB of scores and lists failed at launch
// (cudaErrorInvalidValue) while the check here read 48 KB. The driver is asked once per kernel,
// device and larger size: the decode step's launches ask every step.
template <typename Kernel>
static inline cudaError_t skv_smem_optin(Kernel kernel, size_t bytes) {
  int dev = 0;
  SKV_CUDA_CALL(cudaGetDevice(&dev));
  size_t& granted = skv_smem_granted(reinterpret_cast<const void*>(kernel), dev);
  if (bytes <= granted) return cudaSuccess;
  cudaFuncAttributes fa{};
  SKV_CUDA_CALL(cudaFuncGetAttributes(&fa, kernel));
  if (bytes <= (size_t)fa.maxDynamicSharedSizeBytes) return granted = fa.maxDynamicSharedSizeBytes, cudaSuccess;
  size_t need = 0, limit = 0;
  SKV_CUDA_CALL(skv_smem_need(kernel, bytes, &need, &limit));
  if (need > limit) return cudaErrorInvalidConfiguration;
  SKV_CUDA_CALL(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  granted = bytes;
  return cudaSuccess;
}

// *value = cache[dev] for the current device, where read(dev, value) filled it the first time
// (cache[64], 0: not read yet; a device past 64 reads every time): the plans ask on every step.
template <typename Read>
static inline cudaError_t skv_per_device(int* cache, int* value, Read read) {
  int dev = 0;
  SKV_CUDA_CALL(cudaGetDevice(&dev));
  if (dev >= 64) return read(dev, value);
  // NOTE: two threads may both read the driver; both store the same answer (atomically: see skv_smem_granted).
  int known = __atomic_load_n(&cache[dev], __ATOMIC_RELAXED);
  if (known == 0) {
    SKV_CUDA_CALL(read(dev, &known));
    __atomic_store_n(&cache[dev], known, __ATOMIC_RELAXED);
  }
  *value = known;
  return cudaSuccess;
}

// An attribute of the current device.
template <cudaDeviceAttr ATTR>
static inline cudaError_t skv_device_attribute(int* value) {
  static int known[64] = {};
  return skv_per_device(known, value, [](int dev, int* v) { return cudaDeviceGetAttribute(v, ATTR, dev); });
}

// The current device's compute capability major, and its SMs.
static inline cudaError_t skv_major(int* major) { return skv_device_attribute<cudaDevAttrComputeCapabilityMajor>(major); }
static inline cudaError_t skv_sm_count(int* sms) { return skv_device_attribute<cudaDevAttrMultiProcessorCount>(sms); }

// Blocks of `kernel` at `threads` and `smem` bytes that the current device holds at once (SMs x
// blocks an SM, at least 1), remembered per device in cache[64] (skv_per_device): the launchers
// size grids by it on every step.
template <typename Kernel>
static inline cudaError_t skv_resident_blocks(Kernel kernel, int threads, size_t smem, int* cache, int* blocks) {
  return skv_per_device(cache, blocks, [&](int, int* v) {
    int sms = 0, per_sm = 0;
    SKV_CUDA_CALL(skv_sm_count(&sms));
    SKV_CUDA_CALL(skv_smem_optin(kernel, smem));
    SKV_CUDA_CALL(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
    *v = std::max(1, sms * per_sm);
    return cudaSuccess;
  });
}

// Programmatic dependent launch (sm_90+): a kernel launched by skv_launch may be scheduled while
// the kernel before it on the stream is still running, and waits here, first thing, until that
// kernel has finished and its writes are visible; it then lets the next kernel be scheduled. So
// every kernel that skv_launch starts calls this before it reads or writes anything. A no-op
// where the launch did not ask for it. NOTE: the decode step is ~10 dependent launches of a few
// microseconds each, and the gap between two of them (~2 us, H200) was a tenth of the step at batch 1.
// Its two halves are apart for a kernel whose first reads no kernel before it writes
// (sparse_attention.cu's dense step): it lets the next one be scheduled at once and waits later.
__device__ __forceinline__ void skv_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void skv_pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void skv_pdl_enter() {
  skv_pdl_wait();
  skv_pdl_trigger();
}

// kernel<<<grid, block, smem, stream>>>(args...) with programmatic dependent launch where the
// device has it (compute capability 9.0+), SHADOWKV_CUDA_PDL is not 0 (to measure it) and
// `programmatic`; the kernel must begin with skv_pdl_enter(). Not programmatic, its blocks take no
// SM before the kernel ahead of it on the stream has finished (for a launch whose waiting blocks
// would hold SMs that a launch on another stream needs first). cluster_y > 0: thread block
// clusters of 1 x cluster_y blocks (sm_90+; grid.y a multiple of it).
template <typename... Params, typename... Args>
static inline cudaError_t skv_launch_as(bool programmatic, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                                        cudaStream_t stream, unsigned cluster_y, Args&&... args) {
  static const bool on = !skv_env_off("SHADOWKV_CUDA_PDL");
  int major = 0;
  SKV_CUDA_CALL(skv_major(&major));
  cudaLaunchAttribute attr[2];
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  if (programmatic && on && major >= 9) {
    attr[cfg.numAttrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[cfg.numAttrs++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster_y > 0) {
    attr[cfg.numAttrs].id = cudaLaunchAttributeClusterDimension;
    attr[cfg.numAttrs++].val.clusterDim = {1, cluster_y, 1};
  }
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

template <typename... Params, typename... Args>
static inline cudaError_t skv_launch_cluster(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                                             unsigned cluster_y, Args&&... args) {
  return skv_launch_as(true, kernel, grid, block, smem, stream, cluster_y, std::forward<Args>(args)...);
}

template <typename... Params, typename... Args>
static inline cudaError_t skv_launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                                     Args&&... args) {
  return skv_launch_as(true, kernel, grid, block, smem, stream, 0, std::forward<Args>(args)...);
}

// store(i, load(i)) for i in [0, n) over the block, BATCH loads in flight per thread before any
// store. NOTE: a loop that stored each value before the next load waited a memory latency per
// element (the compiler may not move a load above a store that could alias it).
template <int BATCH = 4, typename Load, typename Store>
__device__ __forceinline__ void batched(int n, Load load, Store store) {
  for (int i0 = threadIdx.x; i0 < n; i0 += BATCH * blockDim.x) {
    float x[BATCH];
#pragma unroll
    for (int b = 0; b < BATCH; b++) {
      const int i = i0 + b * blockDim.x;
      x[b] = i < n ? load(i) : 0.f;
    }
#pragma unroll
    for (int b = 0; b < BATCH; b++)
      if (i0 + b * blockDim.x < n) store(i0 + b * blockDim.x, x[b]);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The max of the warp's v, the same in every lane; NaN only where every v is NaN. NOTE: fmaxf,
// not `w > v ? w : v`: a lane whose own v was NaN kept it through every round, so the lanes
// disagreed, and a branch on the max (online_softmax.cuh: whether anything is visible yet) sent
// some lanes past the next full-warp shuffle: the kernel hung (q, k ~1e20 on an H100).
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Head h's landmark bound word among a store's head counts of `heads` kv heads (SkvHeadField): the
// f32 bits of max |L_i| over its landmarks, raised by atomicMax (landmark_bounds.cu, decode_layer.cu).
__device__ __forceinline__ int32_t* landmark_bound_word(int32_t* head_counts, int heads, int h) {
  return head_counts + heads * SKV_HEAD_FIELDS + h;
}

// op(...op(v_0, v_1)...) of every thread's v over the whole block (blockDim.x a multiple of 32, at
// most 1024), returned to every thread: within each warp by shuffles, then the warps' results in
// order. red: shared [32]. Ends with the block synchronized.
template <typename T, typename Op>
__device__ __forceinline__ T block_fold(T v, Op op, T* red) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  v = red[0];
  for (int w = 1; w < (int)blockDim.x / 32; w++) v = op(v, red[w]);
  __syncthreads();
  return v;
}

// exp(x) by range reduction and the degree-5 polynomial of runtime/wasm/simd.h (Cephes expf);
// exactly 0 below -87.3, inputs above 88.3 clamp, NaN stays NaN (as there: an overflowed logit must
// reach the sums, whose finiteness check then redoes the query or head in float64).
__device__ __forceinline__ float skv_exp(float x) {
  if (!(x >= -87.3f)) return x == x ? 0.f : x;
  if (x > 88.3f) x = 88.3f;
  float n = rintf(x * 1.44269504089f);
  float r = x - n * 0.693359375f - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * r * r + r + 1.f;
  return y * __int_as_float(((int)n + 127) << 23);
}

// Sums of a and b over the whole block (blockDim.x a multiple of 32, at most 1024), returned to
// every thread. red: shared scratch of 64 floats. Ends with the block synchronized.
__device__ __forceinline__ void block_sum2(float& a, float& b, float* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  a = warp_sum(a);
  b = warp_sum(b);
  if (lane == 0) {
    red[warp] = a;
    red[32 + warp] = b;
  }
  __syncthreads();
  float sa = 0.f, sb = 0.f;
  for (int w = 0; w < warps; w++) {
    sa += red[w];
    sb += red[32 + w];
  }
  a = sa;
  b = sb;
  __syncthreads();
}

__host__ __device__ __forceinline__ int64_t skv_min64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t skv_max64(int64_t a, int64_t b) { return a > b ? a : b; }
