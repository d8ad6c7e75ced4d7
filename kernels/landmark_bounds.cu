// Each kv head's landmark bound: the largest magnitude among its landmarks, as f32 bits in the
// store's bound words after its head counts (launchers.h SKV_HEAD_FIELDS), which the fused step
// compares with its queries before it computes a logit (logits_mma.cuh). Computed from scratch
// where the host wrote landmarks (a prefill's, a restore's, a compaction outside a step); the
// step's own compaction raises it (decode_layer.cu CompactChunksKernel). CUDA only: the wasm
// runtime's f32 logits overflow where they should and need no bound.
#include "common.cuh"
#include "dtype.cuh"

// Max |x| over the elements of one 16-byte word (4 f32 or 8 f16/bf16), NaN-ignoring.
__device__ __forceinline__ float word_max_abs(uint4 w, int dtype) {
  float x[8] = {__uint_as_float(w.x), __uint_as_float(w.y), __uint_as_float(w.z), __uint_as_float(w.w)};  // f32: zeros after
  if (dtype != SKV_F32) unpack8_16bit(w, dtype, x);
  float m = 0.f;
#pragma unroll
  for (int i = 0; i < 8; i++) m = fmaxf(m, fabsf(x[i]));
  return m;
}

// Grid (blocks, heads): each block folds its share of head h's landmarks into the head's bits by
// atomicMax (non-negative f32 bits order as integers); the caller zeroed them first. By 16-byte
// words where the head's rows start on one and fill whole words, else element by element.
__global__ void LandmarkBoundsKernel(const void* landmarks, int dtype, int capacity, int d, int32_t* head_counts) {
  const int h = blockIdx.y, heads = gridDim.y;
  const int64_t n = (int64_t)min(max(head_counts[h * SKV_HEAD_FIELDS + SKV_HEAD_LANDMARKS], 0), capacity) * d;
  const size_t esize = skv_dtype_size(dtype), per_word = 16 / esize;
  const char* base = static_cast<const char*>(landmarks) + (size_t)h * capacity * d * esize;
  const int64_t first = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
  float m = 0.f;  // NaN-ignoring: a NaN landmark makes its logits NaN without help
  if (reinterpret_cast<uintptr_t>(base) % 16 == 0 && n % per_word == 0) {
    const uint4* w = reinterpret_cast<const uint4*>(base);
#pragma unroll 4
    for (int64_t i = first; i < n / (int64_t)per_word; i += stride) m = fmaxf(m, word_max_abs(w[i], dtype));
  } else {
    for (int64_t i = first; i < n; i += stride) m = fmaxf(m, fabsf(load_f32(base, dtype, (size_t)i)));
  }
  m = warp_max(m);
  if (threadIdx.x % 32 == 0 && m > 0.f) atomicMax(landmark_bound_word(head_counts, heads, h), __float_as_int(m));
}

cudaError_t LandmarkBounds(const void* landmarks, int dtype, int heads, int capacity, int d, int32_t* head_counts, cudaStream_t stream) {
  if (heads <= 0) return cudaSuccess;
  if (heads > 65535) return cudaErrorInvalidValue;
  SKV_CUDA_CALL(cudaMemsetAsync(head_counts + (size_t)heads * SKV_HEAD_FIELDS, 0, sizeof(int32_t) * heads, stream));
  if (capacity <= 0 || d <= 0) return cudaSuccess;
  // NOTE: a 128K store's head holds 2M values (256K words): 64 blocks of 256 threads a head, 16
  // words a thread. 20 us for a 128K store's 32 MB on an H100, where 16 blocks a head and an element
  // a load took 36 (bench/gpu/landmarkBounds.ts, bench/NOTES.md v58): 0.14 % of its compression.
  const int threads = 256, blocks = (int)std::min<int64_t>(skv_ceil_div((int64_t)capacity * d, threads * 64), 64);
  LandmarkBoundsKernel<<<dim3(std::max(blocks, 1), heads), threads, 0, stream>>>(landmarks, dtype, capacity, d, head_counts);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
