// The landmark logits of the fused decode step (score.cuh): the tensor-core path (logits_mma.cuh)
// against the SIMT path and a float64 reference, at Llama-3-8B's 128K (16K bf16 landmarks of 128
// dims per kv head, 4 query heads), for 8, 32, 128 and 344 tasks (1, 4, 16 and 43 rows x 8 kv
// heads), with the logit_blocks ranges shared by 33 (one each), 8, 4, 2 and 1 blocks per task.
// Errors are |logit - ref| / (scale * sum |q| |L|), the dot product's own scale. Exits 1 if the
// tensor-core path is off by more than 1e-6 of it.
// Usage: logits_bench     (built by bench/gpu/kernels/build.sh; needs a GPU)
#include <stdio.h>
#include <random>
#include <vector>
#include "../../../kernels/score.cuh"

#include "bench_util.cuh"

enum { L = 16384, G = 4, D = 128 };

__global__ void __launch_bounds__(LOGIT_THREADS, 2) Fast(const float* q, const uint16_t* lm, float scale, float* logits, float* maxes) {
  __shared__ float red[LOGIT_GROUPS * LOGIT_HEADS];
  extern __shared__ __align__(16) char stage[];
  const int task = blockIdx.x, nb = logit_blocks(L), per = (nb + (int)gridDim.y - 1) / (int)gridDim.y;
  const int b0 = (int)blockIdx.y * per, b1 = min(nb, b0 + per);
  if (b0 >= nb) return;
  landmark_logits(q + (size_t)task * G * D, G, D, scale, lm + (size_t)task * L * D, SKV_BF16, L, nb, b0, b1, logits + (size_t)task * G * L,
                  L, maxes + ((size_t)task * nb + b0) * G, red, stage);
}

__global__ void __launch_bounds__(LOGIT_THREADS, 2) Simt(const float* q, const uint16_t* lm, float scale, float* logits) {
  extern __shared__ __align__(16) char stage[];
  const int task = blockIdx.x;
  int64_t c0, c1;
  logit_range(L, blockIdx.y, gridDim.y, &c0, &c1);
  float mx[LOGIT_HEADS] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
  logits_group<16>(q + (size_t)task * G * D, 0, G, D, scale, lm + (size_t)task * L * D, SKV_BF16, c0, c1, logits + (size_t)task * G * L, L, mx,
                   stage);
}

__global__ void Reference(const float* q, const uint16_t* lm, double scale, int tasks, double* ref, double* mag) {
  const size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= (size_t)tasks * G * L) return;
  const size_t task = i / (G * L), j = i / L % G, c = i % L;
  double s = 0, m = 0;
  for (int e = 0; e < D; e++) {
    const double x = q[(task * G + j) * D + e], y = bf16_to_f32(lm[(task * L + c) * D + e]);
    s += x * y;
    m += fabs(x * y);
  }
  ref[i] = s * scale;
  mag[i] = m * fabs(scale);
}

int main() {
  const int max_tasks = 344;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint16_t> hl((size_t)max_tasks * L * D);
  std::vector<float> hq((size_t)max_tasks * G * D);
  for (auto& x : hl) {
    const float f = nd(rng);
    uint32_t u;
    memcpy(&u, &f, 4);
    x = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
  for (auto& x : hq) x = 3.f * nd(rng);
  uint16_t* lm;
  float *q, *fast, *simt, *maxes;
  double *ref, *mag;
  const size_t n = (size_t)max_tasks * G * L;
  CK(cudaMalloc(&lm, hl.size() * 2));
  CK(cudaMalloc(&q, hq.size() * 4));
  CK(cudaMalloc(&fast, n * 4));
  CK(cudaMalloc(&simt, n * 4));
  CK(cudaMalloc(&maxes, (size_t)max_tasks * LOGIT_MAX_BLOCKS * G * 4));
  CK(cudaMalloc(&ref, n * 8));
  CK(cudaMalloc(&mag, n * 8));
  CK(cudaMemcpy(lm, hl.data(), hl.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(q, hq.data(), hq.size() * 4, cudaMemcpyHostToDevice));
  CK(skv_smem_optin(Fast, LOGIT_SMEM));
  CK(skv_smem_optin(Simt, LOGIT_SMEM));
  const float scale = 1.f / sqrtf((float)D);
  const int nb = logit_blocks(L);
  int bad = 0;
  for (int tasks : {8, 32, 128, 344}) {
    Reference<<<(unsigned)((tasks * (size_t)G * L + 255) / 256), 256>>>(q, lm, scale, tasks, ref, mag);
    const size_t m = (size_t)tasks * G * L;
    std::vector<float> f(m), s(m);
    std::vector<double> r(m), g(m);
    CK(cudaMemcpy(r.data(), ref, m * 8, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(g.data(), mag, m * 8, cudaMemcpyDeviceToHost));
    const double mb = tasks * (double)L * D * 2 / 1e6;
    for (int split : {nb, 8, 4, 2, 1}) {
      const dim3 grid(tasks, split);
      CK(cudaMemset(fast, 0, m * 4));
      const float tf = median_ms(50, [&] { Fast<<<grid, LOGIT_THREADS, LOGIT_SMEM>>>(q, lm, scale, fast, maxes); });
      CK(cudaMemcpy(f.data(), fast, m * 4, cudaMemcpyDeviceToHost));
      double ef = 0;
      for (size_t i = 0; i < m; i++) ef = std::max(ef, fabs(f[i] - r[i]) / g[i]);
      // Each range's maxima against its logits.
      std::vector<float> mh((size_t)tasks * nb * G);
      CK(cudaMemcpy(mh.data(), maxes, mh.size() * 4, cudaMemcpyDeviceToHost));
      int wrong = 0;
      for (int t = 0; t < tasks; t++)
        for (int b = 0; b < nb; b++) {
          int64_t c0, c1;
          logit_range(L, b, nb, &c0, &c1);
          for (int j = 0; j < G; j++) {
            float want = -INFINITY;
            for (int64_t c = c0; c < c1; c++) want = std::max(want, f[((size_t)t * G + j) * L + c]);
            wrong += mh[((size_t)t * nb + b) * G + j] != want;
          }
        }
      if (wrong) printf("  %d range maxima differ from their logits\n", wrong);
      bad += wrong > 0;
      printf("%3d tasks (%4.0f MB of landmarks), %2d blocks per task: tensor cores %7.1f us (%.2f TB/s), error %.2e\n", tasks, mb, split,
             tf * 1e3, mb / tf / 1e3, ef);
      bad += !(ef <= 1e-6);
    }
    if (tasks <= 32) {
      const float ts = median_ms(50, [&] { Simt<<<dim3(tasks, nb), LOGIT_THREADS, LOGIT_SMEM>>>(q, lm, scale, simt); });
      CK(cudaMemcpy(s.data(), simt, m * 4, cudaMemcpyDeviceToHost));
      double es = 0;
      for (size_t i = 0; i < m; i++) es = std::max(es, fabs(s[i] - r[i]) / g[i]);
      printf("%3d tasks: SIMT, one range per block %7.1f us (%.2f TB/s), error %.2e\n", tasks, ts * 1e3, mb / ts / 1e3, es);
    }
  }
  CK(cudaGetLastError());
  return bad ? 1 : 0;
}
