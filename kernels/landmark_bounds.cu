// Each kv head's landmark bound: the largest magnitude among its landmarks, as f32 bits in the
// store's bound words after its head counts (launchers.h SKV_HEAD_FIELDS), which the fused step
// compares with its queries before it computes a logit (logits_mma.cuh). Computed from scratch
// where the host wrote landmarks (a prefill's, a restore's, a compaction outside a step); the
// step's own compaction raises it (decode_layer.cu CompactChunksKernel). CUDA only: the wasm
// runtime's f32 logits overflow where they should and need no bound.
#include "common.cuh"
#include "dtype.cuh"

// Grid (blocks, heads): each block folds its share of head h's landmarks into the head's bits by
// atomicMax (non-negative f32 bits order as integers); the caller zeroed them first.
__global__ void LandmarkBoundsKernel(const void* landmarks, int dtype, int capacity, int d, int32_t* head_counts) {
  const int h = blockIdx.y, heads = gridDim.y;
  const int64_t n = (int64_t)min(max(head_counts[h * SKV_HEAD_FIELDS + SKV_HEAD_LANDMARKS], 0), capacity) * d;
  const size_t base = (size_t)h * capacity * d;
  float m = 0.f;  // NaN-ignoring: a NaN landmark makes its logits NaN without help
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    m = fmaxf(m, fabsf(load_f32(landmarks, dtype, base + i)));
  m = warp_max(m);
  if (threadIdx.x % 32 == 0 && m > 0.f) atomicMax(&head_counts[heads * SKV_HEAD_FIELDS + h], __float_as_int(m));
}

cudaError_t LandmarkBounds(const void* landmarks, int dtype, int heads, int capacity, int d, int32_t* head_counts, cudaStream_t stream) {
  if (heads <= 0) return cudaSuccess;
  if (heads > 65535) return cudaErrorInvalidValue;
  SKV_CUDA_CALL(cudaMemsetAsync(head_counts + (size_t)heads * SKV_HEAD_FIELDS, 0, sizeof(int32_t) * heads, stream));
  if (capacity <= 0 || d <= 0) return cudaSuccess;
  // NOTE: 16 blocks of 256 a head fill the card at 8 kv heads; a 128K store's 16K landmarks of a
  // head are 2M values, ~500 a thread.
  const int threads = 256, blocks = (int)std::min<int64_t>(skv_ceil_div((int64_t)capacity * d, threads), 16);
  LandmarkBoundsKernel<<<dim3(blocks, heads), threads, 0, stream>>>(landmarks, dtype, capacity, d, head_counts);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
