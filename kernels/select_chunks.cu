// Deterministic top-k: an exact radix select, in one block, of the k-th smallest 64-bit key
// (score rank << 32 | index), then every key up to it. The keys are unique, so the chosen set is
// exactly the wasm one (runtime/wasm/select_chunks.cc): better score first, ties to the lower
// index, NaN after every number. The caller reads the indices back and sorts them ascending.
#include "common.cuh"

enum { SELECT_THREADS = 1024, RADIX = 256 };

// The rank of a score as 32 bits, ascending = preferred first. -0 counts as +0 (they tie);
// every NaN maps to the largest value, where the index orders them.
__device__ __forceinline__ uint32_t score_rank(float s, int largest) {
  if (isnan(s)) return 0xffffffffu;
  uint32_t u = s == 0.f ? 0u : __float_as_uint(s);
  uint32_t mono = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // ascending with the float
  // NOTE: a non-NaN score never reaches 0xffffffff either way (that would be a NaN's bits).
  return largest ? ~mono : mono;
}

__device__ __forceinline__ uint64_t select_key(const float* scores, int i, int largest) {
  return ((uint64_t)score_rank(scores[i], largest) << 32) | (uint32_t)i;
}

__global__ void __launch_bounds__(SELECT_THREADS) SelectChunksKernel(const float* scores, int n, int m, int largest,
                                                                     int32_t* out, int32_t* count) {
  __shared__ uint32_t hist[RADIX];
  __shared__ uint64_t prefix, mask;
  __shared__ uint32_t want;  // rank (1-based) of the k-th key among those matching prefix
  __shared__ int32_t written;
  if (threadIdx.x == 0) {
    prefix = 0;
    mask = 0;
    want = (uint32_t)m;
    written = 0;
  }
  __syncthreads();
  // 1. The m-th smallest key, 8 bits at a time from the top.
  for (int shift = 56; shift >= 0 && m < n; shift -= 8) {
    for (int b = threadIdx.x; b < RADIX; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    const uint64_t pf = prefix, mk = mask;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      uint64_t key = select_key(scores, i, largest);
      if ((key & mk) == pf) atomicAdd(&hist[(key >> shift) & (RADIX - 1)], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      uint32_t below = 0;
      for (int b = 0; b < RADIX; b++) {
        if (below + hist[b] >= want) {
          prefix |= (uint64_t)b << shift;
          mask |= (uint64_t)(RADIX - 1) << shift;
          want -= below;
          break;
        }
        below += hist[b];
      }
    }
    __syncthreads();
  }
  // 2. Every key up to the m-th: exactly m of them (all n when m == n).
  const uint64_t kth = prefix;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    if (m < n && select_key(scores, i, largest) > kth) continue;
    int slot = atomicAdd(&written, 1);
    if (slot < m) out[slot] = i;
  }
  __syncthreads();
  if (threadIdx.x == 0) *count = written < m ? written : m;
}

cudaError_t SelectChunks(const float* scores, int n, int k, int largest, int32_t* out, int32_t* count,
                         cudaStream_t stream) {
  const int m = k < n ? k : n;
  if (m <= 0) return cudaMemsetAsync(count, 0, sizeof(int32_t), stream);
  SelectChunksKernel<<<1, SELECT_THREADS, 0, stream>>>(scores, n, m, largest, out, count);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
