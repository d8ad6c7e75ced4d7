// Heap allocation for the TS side: every buffer it hands to an op comes from here.
#include <stdlib.h>
#include "abi.h"

SKV_EXPORT void* skv_malloc(size_t bytes) {
  // NOTE: 16-byte alignment so that f32 rows can be viewed as Float32Array and v128 loads align.
  size_t rounded = (bytes + 15) & ~(size_t)15;
  if (rounded < bytes) return nullptr;  // size_t overflow
  return aligned_alloc(16, rounded ? rounded : 16);
}

SKV_EXPORT void skv_free(void* p) { free(p); }
