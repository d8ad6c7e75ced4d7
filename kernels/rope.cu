// RoPE in place with float64 angles: one thread per (row, pair). Each angle pos * inv_freq[i] and
// its cos/sin are exact float64 (sincos); only the rotation runs in f32. The wasm op reaches the
// same angles through a recurrence (error ~3e-7 relative); here every row is computed directly.
// Mirrors runtime/wasm/rope.cc (skv_rope).
#include "common.cuh"
#include "rope.cuh"

__global__ void RopeKernel(float* x, int rows, int d, int64_t ldx, const int32_t* positions, const double* inv_freq,
                           int style, float dir) {
  const int half = d / 2;
  const int64_t total = (int64_t)rows * half;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
    const int r = (int)(t / half), i = (int)(t % half);
    float c, s;
    rope_rotation(positions[r], inv_freq[i], &c, &s);
    float* row = x + (size_t)((int64_t)r * ldx);
    rope_rotate(row, half, i, style, c, dir * s);
  }
}

cudaError_t Rope(float* x, int rows, int d, int64_t ldx, const int32_t* positions, const double* inv_freq, int style,
                 int direction, cudaStream_t stream) {
  if (rows <= 0 || d < 2) return cudaSuccess;
  const int64_t total = (int64_t)rows * (d / 2);
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>(skv_ceil_div(total, threads), SKV_MAX_BLOCKS);
  RopeKernel<<<blocks, threads, 0, stream>>>(x, rows, d, ldx, positions, inv_freq, style, direction < 0 ? -1.f : 1.f);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
