// The landmark set of a compression: every chunk of each head but its outliers, in chunk order,
// converted to the storage dtype, with the chunk ids (runtime/cuda's KeepLandmarks, the same bits).
#include <string.h>
#include "dtype.h"

SKV_EXPORT void skv_keep_landmarks(const float* landmarks, int heads, int n_chunks, int d, const int32_t* outliers,
                                   const int32_t* counts, int max_outliers, void* out, int dtype, int32_t* ids, int capacity) {
  for (int h = 0; h < heads; h++) {
    const int32_t* o = outliers + (size_t)h * max_outliers;
    int j = 0;
    for (int c = 0, i = 0; c < n_chunks; c++) {
      if (i < counts[h] && o[i] == c) {
        i++;
        continue;
      }
      store_f32(landmarks + ((size_t)h * n_chunks + c) * d, (char*)out + ((size_t)h * capacity + j) * d * dtype_size(dtype), dtype, (size_t)d);
      ids[(size_t)h * capacity + j++] = c;
    }
    memset(ids + (size_t)h * capacity + j, 0, sizeof(int32_t) * (size_t)(capacity - j));
  }
}
