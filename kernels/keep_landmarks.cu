// The landmark set of a compression: a warp per (head, chunk) finds the chunk's place among the
// head's outliers (a binary search of the sorted list), and unless it is one, converts its landmark
// row to the storage dtype at its slot and writes its id. Mirrors runtime/wasm/keep_landmarks.cc.
// NOTE: one op instead of a convert and a gather over two 131K-entry lists built and uploaded by
// the host (128K tokens x 8 heads).
#include "common.cuh"
#include "dtype.cuh"

__global__ void KeepLandmarksKernel(const float* landmarks, int n_chunks, int d, const int32_t* outliers, const int32_t* counts,
                                    int max_outliers, void* out, int dtype, int32_t* ids, int capacity) {
  const int h = blockIdx.y, lane = threadIdx.x % 32, n = counts[h];
  const int32_t* o = outliers + (size_t)h * max_outliers;
  const int warps = gridDim.x * (blockDim.x / 32);
  for (int c = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; c < n_chunks; c += warps) {
    int lo = 0, hi = n;  // outliers below c
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (o[mid] < c) lo = mid + 1;
      else hi = mid;
    }
    if (lo < n && o[lo] == c) continue;
    const size_t j = (size_t)h * capacity + (c - lo);
    for (int e = lane; e < d; e += 32) store_f32(out, dtype, j * d + e, landmarks[((size_t)h * n_chunks + c) * d + e]);
    if (lane == 0) ids[j] = c;
  }
  // The ids past the head's landmarks.
  for (int j = n_chunks - n + blockIdx.x * blockDim.x + threadIdx.x; j < capacity; j += gridDim.x * blockDim.x) ids[(size_t)h * capacity + j] = 0;
}

cudaError_t KeepLandmarks(const float* landmarks, int heads, int n_chunks, int d, const int32_t* outliers, const int32_t* counts,
                          int max_outliers, void* out, int dtype, int32_t* ids, int capacity, cudaStream_t stream) {
  if (heads <= 0 || capacity <= 0) return cudaSuccess;
  if (heads > 65535) return cudaErrorInvalidValue;
  const int threads = 256, blocks = (int)std::min<int64_t>(std::max<int64_t>(skv_ceil_div(std::max(n_chunks, capacity), threads / 32), 1), 4096);
  KeepLandmarksKernel<<<dim3(blocks, heads), threads, 0, stream>>>(landmarks, n_chunks, d, outliers, counts, max_outliers, out, dtype,
                                                                  ids, capacity);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
