// Deterministic top-k in one block: an exact radix select of the k-th smallest 64-bit key
// (score rank << 32 | index), then every key up to it, written in ascending index order
// (select.cuh, the same code as the fused decode step). The chosen set is exactly the wasm one
// (runtime/wasm/select_chunks.cc): better score first, ties to the lower index, NaN last.
#include "select.cuh"

// Block r selects row r (scores + r * n) into out + r * min(k, n), its count to count[r].
__global__ void __launch_bounds__(SELECT_THREADS) SelectChunksKernel(const float* scores, int n, int k, int largest,
                                                                     int32_t* out, int32_t* count) {
  __shared__ SelectShared sh;
  const int r = blockIdx.x, mr = k < n ? k : n;
  const int m = select_top(scores + (size_t)r * n, n, k, largest, out + (size_t)r * mr, sh);
  if (threadIdx.x == 0) count[r] = m;
}

cudaError_t SelectChunks(const float* scores, int n, int k, int largest, int rows, int32_t* out, int32_t* count,
                         cudaStream_t stream) {
  const int m = k < n ? k : n;
  if (rows <= 0) return cudaSuccess;
  if (m <= 0) return cudaMemsetAsync(count, 0, sizeof(int32_t) * (size_t)rows, stream);
  SelectChunksKernel<<<rows, SELECT_THREADS, 0, stream>>>(scores, n, k, largest, out, count);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
