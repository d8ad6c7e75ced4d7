// Where the select stage of the fused decode step spends its time: one block of SELECT_THREADS per
// task (a row's kv head), at Llama-3-8B's 128K (16K landmarks, 4 query heads per kv head, top 256),
// timed stage by stage (select.cuh): the softmax statistics, the scores, the top-k threshold, the
// ordered compaction, with 8 and 32 tasks (1 and 4 rows) as the step launches them.
// Usage: select_bench     (built by bench/gpu/kernels/build.sh; needs a GPU)
#include <stdio.h>
#include <random>
#include <vector>
#include "../../../kernels/select.cuh"

#include "bench_util.cuh"

enum { L = 16384, G = 4, K = 256, NB = 32 };

// stages: 1 softmax stats, 2 + scores, 3 + threshold, 4 + compaction (the whole select_top).
__global__ void __launch_bounds__(SELECT_THREADS) SelectStages(const float* logits, const float* maxes, int stages, int32_t* ids) {
  __shared__ SelectShared sh;
  __shared__ double red_d[32 * SOFTMAX_HEADS], sums[G];
  extern __shared__ float smem[];
  const size_t task = blockIdx.x;
  const float* lg = logits + task * G * L;
  float* stats = smem;
  float* scores = smem + 2 * G;
  softmax_max(maxes + task * NB * G, NB, G, stats);
  softmax_inv(lg, L, G, L, stats, stats + G, sums, red_d);
  if (stages < 2) return;
  chunk_scores(lg, L, G, L, stats, stats + G, scores);
  __syncthreads();
  if (stages < 3) return;
  if (stages == 3) {
    const uint64_t kth = select_threshold(scores, L, K, 1, sh);
    if (threadIdx.x == 0) ids[task * K] = (int32_t)kth;
    return;
  }
  select_top(scores, L, K, 1, ids + task * K, sh);
}

int main() {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 3.f);
  const int max_tasks = 32;
  std::vector<float> h((size_t)max_tasks * G * L), hm((size_t)max_tasks * NB * G, -INFINITY);
  for (size_t i = 0; i < h.size(); i++) h[i] = nd(rng);
  for (int t = 0; t < max_tasks; t++)
    for (int j = 0; j < G; j++)
      for (int c = 0; c < L; c++) {
        float& m = hm[((size_t)t * NB + c / (L / NB)) * G + j];
        m = std::max(m, h[((size_t)t * G + j) * L + c]);
      }
  float *logits, *maxes;
  int32_t* ids;
  CK(cudaMalloc(&logits, h.size() * 4));
  CK(cudaMalloc(&maxes, hm.size() * 4));
  CK(cudaMalloc(&ids, (size_t)max_tasks * K * 4));
  CK(cudaMemcpy(logits, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(maxes, hm.data(), hm.size() * 4, cudaMemcpyHostToDevice));
  const size_t smem = sizeof(float) * (2 * G + L);
  CK(skv_smem_optin(SelectStages, smem));
  const char* names[] = {"", "softmax stats", "+ scores", "+ threshold", "+ compaction"};
  for (int tasks : {8, 32}) {
    float prev = 0.f;
    for (int st = 1; st <= 4; st++) {
      const float t = median_ms(50, [&] { SelectStages<<<tasks, SELECT_THREADS, smem>>>(logits, maxes, st, ids); });
      printf("%2d tasks: %-14s %7.1f us (this stage %6.1f us)\n", tasks, names[st], t * 1e3, (t - prev) * 1e3);
      prev = t;
    }
  }
  CK(cudaGetLastError());
  return 0;
}
