// Bulk dtype conversion (e.g. storing f32 results in the cache's 16-bit dtype).
#include "dtype.h"

SKV_EXPORT void skv_convert(const void* src, int src_dtype, void* dst, int dst_dtype, int n) {
  if (n <= 0) return;
  if (src_dtype == dst_dtype) { memmove(dst, src, (size_t)n * dtype_size(src_dtype)); return; }
  if (src_dtype == SKV_F32) { store_f32((const float*)src, dst, dst_dtype, (size_t)n); return; }
  if (dst_dtype == SKV_F32) { load_f32(src, src_dtype, (size_t)n, (float*)dst); return; }
  // 16-bit to 16-bit goes through f32 in blocks that stay in L1.
  float buf[256];
  for (int i = 0; i < n; i += 256) {
    int m = n - i < 256 ? n - i : 256;
    load_f32(dtype_at(src, src_dtype, i), src_dtype, m, buf);
    store_f32(buf, (char*)dst + (size_t)i * 2, dst_dtype, m);
  }
}
