// convert_rows: a strided skv_convert, one call per row.
#include "abi.h"

static int dtype_bytes(int dtype) { return dtype == SKV_F32 ? 4 : 2; }

SKV_EXPORT void skv_convert_rows(const void* src, int src_dtype, int src_ld, void* dst, int dst_dtype,
                                 int dst_ld, int rows, int cols) {
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  const int sb = dtype_bytes(src_dtype), db = dtype_bytes(dst_dtype);
  for (int r = 0; r < rows; r++) {
    skv_convert(s + (size_t)r * src_ld * sb, src_dtype, d + (size_t)r * dst_ld * db, dst_dtype, cols);
  }
}
