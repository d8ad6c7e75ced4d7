// Pre-RoPE keys of a compression in one pass: a thread per (row, pair) computes the pair's
// rotation once and undoes it on every head's key, reading the storage dtype and writing f32 rows
// [rows x heads * d]. The bits of ConvertRows then Rope (direction -1) a head at a time, which it
// replaces: the same conversion, the same float64 angle and the same f32 rotation (rope.cuh).
// Mirrors runtime/wasm/pre_rope_keys.cc. NOTE: compression called those two ops per head: 16
// launches, ~3 passes over 64 MB of f32 a head and 8 float64 sincos per (row, pair), for 8 heads of
// a 128K prompt (preRopeKeys ~1.6 ms on the H200, bench/NOTES.md v21).
#include "common.cuh"
#include "dtype.cuh"
#include "rope.cuh"

__global__ void PreRopeKeysKernel(const void* src, int dtype, int64_t head_stride, int heads, int rows, int d, float* dst,
                                  int64_t ld, const double* inv_freq, int style, int first) {
  const int half = d / 2;
  const int64_t total = (int64_t)rows * half;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
    const int r = (int)(t / half), i = (int)(t % half);
    float c, s;
    rope_rotation((int64_t)first + r, inv_freq[i], &c, &s);
    const int p1 = style == SKV_ROPE_INTERLEAVED ? 2 * i : i, p2 = style == SKV_ROPE_INTERLEAVED ? 2 * i + 1 : half + i;
    for (int h = 0; h < heads; h++) {
      const size_t at = (size_t)h * head_stride + (size_t)r * d;
      float* row = dst + (size_t)r * ld + (size_t)h * d;
      row[p1] = load_f32(src, dtype, at + p1);
      row[p2] = load_f32(src, dtype, at + p2);
      rope_rotate(row, half, i, style, c, -s);  // direction -1
    }
  }
}

cudaError_t PreRopeKeys(const void* src, int dtype, int64_t head_stride, int heads, int rows, int d, float* dst, int64_t ld,
                        const double* inv_freq, int style, int first, cudaStream_t stream) {
  if (heads <= 0 || rows <= 0 || d < 2) return cudaSuccess;
  const int64_t total = (int64_t)rows * (d / 2);
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>(skv_ceil_div(total, threads), SKV_MAX_BLOCKS);
  PreRopeKeysKernel<<<blocks, threads, 0, stream>>>(src, dtype, head_stride, heads, rows, d, dst, ld, inv_freq, style, first);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
