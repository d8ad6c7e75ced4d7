// Pre-RoPE keys of a compression: `heads` heads' post-RoPE key rows to f32, side by side, RoPE
// undone at positions first, first + 1, ... (runtime/cuda's PreRopeKeys; here skv_convert_rows, then
// skv_rope a head at a time, the bits of those two ops).
#include "abi.h"
#include "dtype.h"
#include "scratch.h"

SKV_EXPORT void skv_pre_rope_keys(const void* src, int dtype, int head_stride, int heads, int rows, int d, float* dst,
                                  int ld, const double* inv_freq, int style, int first) {
  if (heads <= 0 || rows <= 0 || d <= 0) return;
  Scratch<int32_t> positions(rows);
  for (int r = 0; r < rows; r++) positions[r] = first + r;
  for (int h = 0; h < heads; h++) {
    skv_convert_rows(dtype_at(src, dtype, (size_t)h * head_stride), dtype, d, dst + (size_t)h * d, SKV_F32, ld, rows, d);
    skv_rope(dst + (size_t)h * d, rows, d, ld, positions.p, inv_freq, style, -1);
  }
}
