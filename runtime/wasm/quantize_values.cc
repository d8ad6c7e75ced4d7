// Values [chunks x C x d] of a storage dtype into fp8 chunks (fp8.h): the host tier's writer when
// it holds fp8 (the prompt's chunks at compression, the tail's at compaction).
#include "dtype.h"
#include "fp8.h"
#include "scratch.h"

SKV_EXPORT void skv_quantize_values(const void* src, int dtype, int chunks, int C, int d, void* dst) {
  if (chunks <= 0 || C <= 0 || d <= 0) return;
  Scratch<float> rows((uint64_t)C * d);
  const size_t values = (size_t)C * d, bytes = fp8_chunk_bytes(C, d);
  for (int c = 0; c < chunks; c++) {
    load_f32(dtype_at(src, dtype, (size_t)c * values), dtype, values, rows);
    fp8_quantize_chunk(rows, C, d, (uint8_t*)dst + (size_t)c * bytes);
  }
}
