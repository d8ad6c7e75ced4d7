// What the kernel benchmarks share: a CUDA call that exits with its error, and the median of
// timed repetitions (CUDA events, after one warm-up run; median_ms_after runs a step of its own
// before each, untimed).
#pragma once
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <algorithm>
#include <vector>

#define CK(expr)                                                                             \
  do {                                                                                       \
    cudaError_t e_ = (expr);                                                                 \
    if (e_ != cudaSuccess) {                                                                 \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      exit(2);                                                                               \
    }                                                                                        \
  } while (0)

// pre() runs before each repetition, outside the timed events (e.g. a write that evicts L2).
template <typename Pre, typename F>
static float median_ms_after(int reps, Pre&& pre, F&& f) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  f();  // warm-up
  std::vector<float> t;
  for (int r = 0; r < reps; r++) {
    pre();
    CK(cudaEventRecord(a));
    f();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

template <typename F>
static float median_ms(int reps, F&& f) {
  return median_ms_after(reps, [] {}, f);
}
