// Decode attention over a dense bf16 cache (the own `full` policy's step, and the attention stage
// of ShadowKV's) at Llama-3-8B's geometry: 8 kv heads x 4 query heads, d 128, 128K keys per task,
// 1, 4 and 16 rows (8, 32 and 128 tasks). Times the whole op (one launch: the splits, each task's last
// block merging them), the register kernel, and a plain read of the same bytes by cp.async (the
// ceiling of this access pattern), so the gap to SDPA splits into kernel and pattern. Checks the
// output against a float64 reference.
// Usage: attention_bench     (built by bench/gpu/kernels/build.sh; needs a GPU)
// Variants (bench/NOTES.md v9: stages and splits side by side; v19: the loader and the merge) are
// the same file built with the kernels' build-time knobs SKV_DM_STAGES, SKV_ATTN_MAX_SPLITS,
// and SKV_DM_BULK (0: cp.async tiles on sm_90 too), e.g. for 2 stages and at most 32 splits (the
// output bits printed must not change with the loader):
//   nvcc -std=c++17 -O3 -arch=sm_90 --expt-relaxed-constexpr -cudart static -DSKV_DM_STAGES=2
//     -DSKV_ATTN_MAX_SPLITS=32 bench/gpu/kernels/attention_bench.cu -o bench/gpu/kernels/build/attention_bench_p32s2
#include <math.h>
#include <stdio.h>
#include <random>
#include <vector>
#include "../../../kernels/sparse_attention.cu"

#include "bench_util.cuh"

enum { N = 131072, G = 4, D = 128 };

// Reads every K and V row of every task once through shared memory, as the tensor-core kernel's
// loader does (same grid, same 64-row tiles, 3 stages), and keeps one word so nothing is elided.
__global__ void __launch_bounds__(DM_THREADS) ReadOnly(const SkvAttnTask* tasks, float* sink) {
  extern __shared__ __align__(16) uint16_t dsm[];
  constexpr int STAGE = 2 * DM_TILE * (D + DM_PAD);
  const SkvAttnTask t = tasks[blockIdx.x];
  int64_t begin, end;
  if (!split_range(t, G, D, &begin, &end)) return;
  const int ntiles = (int)((end - begin + DM_TILE - 1) / DM_TILE);
  auto load_tile = [&](int i) { load_kv_tile<D>(dsm, t.segs, 1, begin, end, i, ntiles); };
  for (int i = 0; i < DM_STAGES - 1; i++) load_tile(i);
  uint32_t acc = 0;
  for (int i = 0; i < ntiles; i++) {
    skv_mma::cp_async_wait<DM_STAGES - 2>();
    __syncthreads();
    load_tile(i + DM_STAGES - 1);
    acc ^= dsm[(i % DM_STAGES) * STAGE + threadIdx.x];
  }
  skv_mma::cp_async_wait<0>();
  if (acc == 0x12345u) sink[0] = 1.f;
}

// The same reads by the bulk-copy engine (cp.async.bulk, completion on an mbarrier per stage), R
// consecutive rows per copy, each group of R rows followed by 16 bytes of padding (ldmatrix over 8
// rows then meets 8 / R-way bank conflicts, none at R = 1): R = 64 is one copy per K or V tile.
template <int R>
__global__ void __launch_bounds__(DM_THREADS) ReadBulk(const SkvAttnTask* tasks, float* sink) {
  using namespace skv_mma;
  extern __shared__ __align__(16) uint16_t dsm[];
  __shared__ __align__(8) uint64_t bar[DM_STAGES];
  constexpr int GROUP = R * D + 8, TILE = DM_TILE / R * GROUP, STAGE = 2 * TILE, COPIES = 2 * DM_TILE / R;
  const SkvAttnTask t = tasks[blockIdx.x];
  int64_t begin, end;
  if (!split_range(t, G, D, &begin, &end)) return;
  const int ntiles = (int)((end - begin + DM_TILE - 1) / DM_TILE);
  const char* k = reinterpret_cast<const char*>(t.segs[0].k);
  const char* v = reinterpret_cast<const char*>(t.segs[0].v);
  if (threadIdx.x < DM_STAGES) mbar_init(&bar[threadIdx.x], COPIES);
  mbar_init_fence();
  __syncthreads();
  auto load_tile = [&](int i) {
    if (i >= ntiles || threadIdx.x >= COPIES) return;
    uint16_t* ks = dsm + (i % DM_STAGES) * STAGE;
    uint64_t* b = &bar[i % DM_STAGES];
    const int64_t k0 = begin + (int64_t)i * DM_TILE;
    const int rows = (int)skv_min64(DM_TILE, end - k0);
    fence_proxy_async();
    const int grp = threadIdx.x % (DM_TILE / R), isv = threadIdx.x / (DM_TILE / R);
    const int n = rows - grp * R < 0 ? 0 : rows - grp * R < R ? rows - grp * R : R;
    const unsigned bytes = n * D * 2;
    mbar_arrive_expect(b, bytes);
    if (bytes) bulk_copy(ks + isv * TILE + grp * GROUP, (isv ? v : k) + (k0 + grp * R) * D * 2, bytes, b);
  };
  for (int i = 0; i < DM_STAGES - 1; i++) load_tile(i);
  uint32_t acc = 0;
  for (int i = 0; i < ntiles; i++) {
    mbar_wait(&bar[i % DM_STAGES], (i / DM_STAGES) & 1);
    __syncthreads();
    load_tile(i + DM_STAGES - 1);
    acc ^= dsm[(i % DM_STAGES) * STAGE + threadIdx.x];
  }
  if (acc == 0x12345u) sink[0] = 1.f;
}

int main() {
  const size_t max_tasks = 128;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint16_t> kh((size_t)N * D), vh((size_t)N * D);
  for (auto& x : kh) { float f = nd(rng); uint32_t b; memcpy(&b, &f, 4); x = (uint16_t)(b >> 16); }
  for (auto& x : vh) { float f = nd(rng); uint32_t b; memcpy(&b, &f, 4); x = (uint16_t)(b >> 16); }
  // Every task gets its own copy of the keys, so the bytes come from DRAM as in the cache.
  uint16_t *k, *v;
  CK(cudaMalloc(&k, sizeof(uint16_t) * max_tasks * N * D));
  CK(cudaMalloc(&v, sizeof(uint16_t) * max_tasks * N * D));
  for (size_t t = 0; t < max_tasks; t++) {
    CK(cudaMemcpy(k + t * N * D, kh.data(), sizeof(uint16_t) * N * D, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(v + t * N * D, vh.data(), sizeof(uint16_t) * N * D, cudaMemcpyHostToDevice));
  }
  std::vector<float> qh(max_tasks * G * D);
  for (auto& x : qh) x = nd(rng);
  float *q, *out, *sink;
  void* ws;
  CK(cudaMalloc(&q, sizeof(float) * qh.size()));
  CK(cudaMemcpy(q, qh.data(), sizeof(float) * qh.size(), cudaMemcpyHostToDevice));
  CK(cudaMalloc(&out, sizeof(float) * max_tasks * G * D));
  CK(cudaMalloc(&sink, sizeof(float)));
  const int most = attn_max_splits(N);  // the workspace holds every split count
  CK(cudaMalloc(&ws, AttentionWorkspace((int)max_tasks, most, G, D)));
  CK(cudaMemset(ws, 0, AttentionWorkspace((int)max_tasks, most, G, D)));
  std::vector<SkvSegment> segs(max_tasks);
  std::vector<SkvAttnTask> tasks(max_tasks);
  SkvSegment* segs_d;
  SkvAttnTask* tasks_d;
  CK(cudaMalloc(&segs_d, sizeof(SkvSegment) * max_tasks));
  CK(cudaMalloc(&tasks_d, sizeof(SkvAttnTask) * max_tasks));
  for (size_t t = 0; t < max_tasks; t++) {
    segs[t] = SkvSegment{(uint64_t)(k + t * N * D), (uint64_t)(v + t * N * D), N, D};
    tasks[t] = SkvAttnTask{q + t * G * D, segs_d + t, N, out + t * G * D, nullptr, 1, SKV_F32};
  }
  CK(cudaMemcpy(segs_d, segs.data(), sizeof(SkvSegment) * max_tasks, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(tasks_d, tasks.data(), sizeof(SkvAttnTask) * max_tasks, cudaMemcpyHostToDevice));
  const float scale = 1.f / sqrtf((float)D);
  constexpr size_t smem = mma_smem_bytes<D>();
  CK(skv_smem_optin(FlashDecodeMmaKernel<D, G, TaskList>, smem));
  CK(skv_smem_optin(ReadOnly, smem));
  const size_t bulk_smem = sizeof(uint16_t) * DM_STAGES * 2 * (DM_TILE * D + DM_TILE * 8);  // R = 1 pads most
  CK(skv_smem_optin(ReadBulk<1>, bulk_smem));
  CK(skv_smem_optin(ReadBulk<2>, bulk_smem));
  CK(skv_smem_optin(ReadBulk<4>, bulk_smem));
  CK(skv_smem_optin(ReadBulk<64>, bulk_smem));
  for (int ntasks : {8, 32, 128}) {
    const double bytes = 2.0 * ntasks * N * D * sizeof(uint16_t);
    int splits = 0;
    CK(AttentionSplits(ntasks, N, G, D, SKV_BF16, &splits));
    const dim3 grid(ntasks, splits);
    // Each launch leaves the arrival counts at zero for the next (attention.h).
    const float whole = median_ms(20, [&] { CK(Attention(tasks_d, SkvAttnTask{}, ntasks, splits, G, D, scale, SKV_BF16, ws, 0)); });
    float* part = static_cast<float*>(ws);
    int32_t* arrivals = AttentionArrivals(ws, ntasks, splits, G, D);
    const float simt = median_ms(20, [&] {
      FlashDecodeKernel<D, G, TaskList><<<grid, FLASH_THREADS>>>(TaskList{tasks_d, SkvAttnTask{}}, scale, SKV_BF16, part, splits, arrivals);
      CK(cudaGetLastError());
    });
    const float read = median_ms(20, [&] {
      ReadOnly<<<grid, DM_THREADS, smem>>>(tasks_d, sink);
      CK(cudaGetLastError());
    });
    printf("%2d tasks: bulk-copy reads, rows per copy:", ntasks);
    auto bulk = [&](auto kernel, int rows) {
      const float ms = median_ms(20, [&] {
        kernel<<<grid, DM_THREADS, bulk_smem>>>(tasks_d, sink);
        CK(cudaGetLastError());
      });
      printf(" %d: %.3f ms (%.2f TB/s);", rows, ms, bytes / ms / 1e9);
    };
    bulk(ReadBulk<1>, 1);
    bulk(ReadBulk<2>, 2);
    bulk(ReadBulk<4>, 4);
    bulk(ReadBulk<64>, 64);
    printf("\n");
    const double copied = std::min(bytes / 4, 32.0 * N * D);  // at most 16 tasks' keys, into the next 16 tasks'
    const float copy = median_ms(20, [&] { CK(cudaMemcpyAsync(k + 16 * (size_t)N * D, k, (size_t)copied, cudaMemcpyDeviceToDevice)); });
    // The output of task 0 against float64.
    CK(Attention(tasks_d, SkvAttnTask{}, ntasks, splits, G, D, scale, SKV_BF16, ws, 0));
    std::vector<float> o((size_t)ntasks * G * D);
    CK(cudaMemcpy(o.data(), out, sizeof(float) * o.size(), cudaMemcpyDeviceToHost));
    uint64_t bits = 1469598103934665603ull;  // FNV-1a of every task's output: builds with other loaders must match
    for (float x : o) {
      uint32_t w;
      memcpy(&w, &x, 4);
      bits = (bits ^ w) * 1099511628211ull;
    }
    double worst = 0;
    for (int j = 0; j < G; j++) {
      std::vector<double> s(N);
      double mx = -INFINITY, l = 0;
      for (int n = 0; n < N; n++) {
        double x = 0;
        for (int e = 0; e < D; e++) {
          uint32_t b = (uint32_t)kh[(size_t)n * D + e] << 16;
          float f;
          memcpy(&f, &b, 4);
          x += (double)qh[j * D + e] * f;
        }
        s[n] = x * scale;
        mx = std::max(mx, s[n]);
      }
      std::vector<double> acc(D, 0.0);
      for (int n = 0; n < N; n++) {
        const double p = exp(s[n] - mx);
        l += p;
        for (int e = 0; e < D; e++) {
          uint32_t b = (uint32_t)vh[(size_t)n * D + e] << 16;
          float f;
          memcpy(&f, &b, 4);
          acc[e] += p * f;
        }
      }
      double ref_max = 0;
      for (int e = 0; e < D; e++) ref_max = std::max(ref_max, fabs(acc[e] / l));
      for (int e = 0; e < D; e++) worst = std::max(worst, fabs(o[j * D + e] - acc[e] / l) / ref_max);
    }
    printf("%2d tasks x 128K (%.0f MB), %d splits: op (tensor cores, merge included) %.3f ms (%.2f TB/s); register kernel %.3f;"
           " cp.async read of the same tiles %.3f ms (%.2f TB/s); D2D copy of a quarter (at most 512 MB) %.3f ms (%.2f TB/s); error %.2e;"
           " output bits %016llx\n",
           ntasks, bytes / 1e6, splits, whole, bytes / whole / 1e9, simt, read, bytes / read / 1e9, copy,
           2 * copied / copy / 1e9, worst, (unsigned long long)bits);
  }
  return 0;
}
