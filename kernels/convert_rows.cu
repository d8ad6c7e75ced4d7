// convert_rows: a strided convert (e.g. head h's rows [t x d] into column block h*d of a
// [t x Hkv*d] matrix). One row per blockIdx.y slice, columns over threads. Mirrors convert_rows.cc.
#include "common.cuh"
#include "dtype.cuh"

__global__ void ConvertRowsKernel(const void* src, int src_dtype, int64_t src_ld, void* dst, int dst_dtype,
                                  int64_t dst_ld, int rows, int cols) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x)
      convert_elem(src, src_dtype, (size_t)(r * src_ld + c), dst, dst_dtype, (size_t)(r * dst_ld + c));
}

cudaError_t ConvertRows(const void* src, int src_dtype, int64_t src_ld, void* dst, int dst_dtype, int64_t dst_ld,
                        int rows, int cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  const int threads = 128;
  dim3 grid((unsigned)std::min<int64_t>(skv_ceil_div(cols, threads), 1024), (unsigned)std::min(rows, (int)SKV_MAX_BLOCKS));
  ConvertRowsKernel<<<grid, threads, 0, stream>>>(src, src_dtype, src_ld, dst, dst_dtype, dst_ld, rows, cols);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
