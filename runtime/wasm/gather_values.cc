// Fetches the values of missed chunks from the paged host tier into their device slots: one
// memcpy per chunk, no conversion (the tier holds the storage dtype).
#include "dtype.h"

SKV_EXPORT void skv_gather_values(void* const* pages, int page_chunks, int heads, int h,
                                  const int32_t* ids, const int32_t* slots, int n, int block, int dtype,
                                  void* dst) {
  if (n <= 0 || block <= 0 || page_chunks <= 0) return;
  const size_t bytes = (size_t)block * dtype_size(dtype);  // one chunk
  for (int i = 0; i < n; i++) {
    const char* page = (const char*)pages[(size_t)(ids[i] / page_chunks) * heads + h];
    const char* src = page + (size_t)(ids[i] % page_chunks) * bytes;
    memcpy((char*)dst + (size_t)(slots ? slots[i] : i) * bytes, src, bytes);
  }
}
