// Deterministic top-k: O(n) selection under a total order on (score, index), then the chosen
// indices ascending.
#include <math.h>
#include <algorithm>
#include "abi.h"
#include "scratch.h"

SKV_EXPORT int skv_select_chunks(const float* scores, int n, int k, int largest, int32_t* out) {
  int m = k < n ? k : n;
  if (m <= 0) return 0;
  // NOTE: ties go to the lower index so that every runtime selects the same set; NaN scores rank
  // after every number (never preferred), which keeps the order total.
  auto before = [scores, largest](int32_t a, int32_t b) {
    float sa = scores[a], sb = scores[b];
    bool na = isnan(sa), nb = isnan(sb);
    if (na || nb) return na != nb ? nb : a < b;
    if (sa != sb) return largest ? sa > sb : sa < sb;
    return a < b;
  };
  Scratch<int32_t> idx(n);  // [n]
  for (int i = 0; i < n; i++) idx[i] = i;
  if (m < n) std::nth_element(idx.p, idx.p + (m - 1), idx.p + n, before);
  std::sort(idx.p, idx.p + m);
  for (int i = 0; i < m; i++) out[i] = idx[i];
  return m;
}
