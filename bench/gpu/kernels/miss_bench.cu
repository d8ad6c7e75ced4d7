// Where the miss path of the fused decode step spends its time, one part at a time: the zero-copy
// gather of value chunks from pinned host memory (one large allocation or 512 KB pages as the
// cache keeps them; random or consecutive chunks; one chunk per block or several words per thread
// in flight), and the key rebuild (rebuild_keys.cuh) alone, at the miss counts of one Llama-3-8B
// layer at 1 x 128K and 4 x 128K (about a third of 2048 chunks per row missed), and the two at
// once on two streams, as the fused step runs them.
// `miss_bench variants`: only the ways of reading the same random chunks that could pass the plain
// loads' ~50 GB/s: loads that ask L2 for 256-byte sectors, bulk copies (one 2 KB request a chunk,
// issued by one thread), and the copy engine (one contiguous copy of the same bytes, the ceiling of
// the link; and a batch of one copy a chunk). Each checks the bytes that arrive.
// Usage: miss_bench [variants]     (built by bench/gpu/kernels/build.sh; needs a GPU)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <numeric>
#include <random>
#include <vector>
#include "../../../kernels/mma.cuh"
#include "../../../kernels/rebuild_keys.cuh"

#include "bench_util.cuh"

enum { CHUNK_WORDS = 128 };  // 2 KB: 8 tokens x 128 dims x 2 bytes, in 16-byte words

// One chunk per block of 128 threads, a word each: the gather of DESIGN §4.
__global__ void GatherPerChunk(const uint4* const* pages, int page_chunks, const int32_t* ids, uint4* out) {
  const int id = ids[blockIdx.x];
  const uint4* src = pages[id / page_chunks] + (size_t)(id % page_chunks) * CHUNK_WORDS;
  out[(size_t)blockIdx.x * CHUNK_WORDS + threadIdx.x] = src[threadIdx.x];
}

// K words per thread requested before any is stored; WIDE: each load asks L2 for 256-byte sectors
// (a hint, sm_80+).
template <int K, bool WIDE = false>
__global__ void GatherInFlight(const uint4* const* pages, int page_chunks, const int32_t* ids, int n, uint4* out) {
  const size_t words = (size_t)n * CHUNK_WORDS, stride = (size_t)gridDim.x * blockDim.x;
  for (size_t w0 = blockIdx.x * (size_t)blockDim.x + threadIdx.x; w0 < words; w0 += stride * K) {
    uint4 v[K];
#pragma unroll
    for (int k = 0; k < K; k++) {
      const size_t w = w0 + k * stride;
      if (w < words) {
        const int id = ids[w / CHUNK_WORDS];
        const uint4* p = pages[id / page_chunks] + (size_t)(id % page_chunks) * CHUNK_WORDS + w % CHUNK_WORDS;
        if constexpr (WIDE)
          asm volatile("ld.global.nc.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v[k].x), "=r"(v[k].y), "=r"(v[k].z), "=r"(v[k].w) : "l"(p));
        else
          v[k] = *p;
      }
    }
#pragma unroll
    for (int k = 0; k < K; k++) {
      const size_t w = w0 + k * stride;
      if (w < words) out[w] = v[k];
    }
  }
}

// Bulk copies: block b takes chunks b, b + grid, ...; thread 0 requests up to STAGES of them (2 KB
// each, one barrier each) at once, and the block stores each as it lands.
template <int STAGES>
__global__ void __launch_bounds__(CHUNK_WORDS) GatherBulk(const uint4* const* pages, int page_chunks, const int32_t* ids, int n, uint4* out) {
  __shared__ __align__(128) uint4 buf[STAGES][CHUNK_WORDS];
  __shared__ __align__(8) uint64_t bar[STAGES];
  using namespace skv_mma;
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; s++) mbar_init(&bar[s], 1);
    mbar_init_fence();
  }
  __syncthreads();
  auto request = [&](int c, int s) {
    const int id = ids[c];
    mbar_arrive_expect(&bar[s], CHUNK_WORDS * 16);
    bulk_copy(buf[s], pages[id / page_chunks] + (size_t)(id % page_chunks) * CHUNK_WORDS, CHUNK_WORDS * 16, &bar[s]);
  };
  if (threadIdx.x == 0)
    for (int s = 0, c = blockIdx.x; s < STAGES && c < n; s++, c += gridDim.x) request(c, s);
  int i = 0;
  for (int c = blockIdx.x; c < n; c += gridDim.x, i++) {
    const int s = i % STAGES;
    mbar_wait(&bar[s], (i / STAGES) & 1);
    out[(size_t)c * CHUNK_WORDS + threadIdx.x] = buf[s][threadIdx.x];
    __syncthreads();  // the stage is read before it is refilled
    const int next = c + STAGES * (int)gridDim.x;
    if (threadIdx.x == 0 && next < n) request(next, s);
  }
}

__global__ void __launch_bounds__(REBUILD_THREADS) RebuildOnly(RebuildArgs a, const int32_t* ids, int n) {
  extern __shared__ float smem[];
  __shared__ int32_t slots[REBUILD_TOKENS];
  const int per = rebuild_chunks_per_block(a.C), first = blockIdx.x * per, m = min(per, n - first);
  for (int i = threadIdx.x; i < m; i += blockDim.x) slots[i] = first + i;
  rebuild_group(a, ids + first, slots, m, smem);
}

struct Host {
  std::vector<void*> allocs;
  std::vector<const uint4*> pages;
  int page_chunks;
};

static Host alloc_host(size_t bytes, size_t page_bytes) {
  Host h;
  h.page_chunks = (int)(page_bytes / (CHUNK_WORDS * 16));
  for (size_t off = 0; off < bytes; off += page_bytes) {
    void* p;
    CK(cudaHostAlloc(&p, page_bytes, cudaHostAllocMapped | cudaHostAllocPortable));
    memset(p, 1, page_bytes);
    h.allocs.push_back(p);
    void* dp;
    CK(cudaHostGetDevicePointer(&dp, p, 0));
    h.pages.push_back(static_cast<const uint4*>(dp));
  }
  return h;
}

static std::mt19937 rng(7);
static std::vector<int32_t> random_ids(int n, int range) {
  std::vector<int32_t> all(range);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(n);
  std::sort(all.begin(), all.end());
  return all;
}

// The variants over 512 KB pages (as the cache keeps them), random chunks; exits 1 on a wrong byte.
static int variants(size_t total) {
  const int total_chunks = (int)(total / (CHUNK_WORDS * 16));
  Host h = alloc_host(total, 512 << 10);
  for (size_t p = 0; p < h.allocs.size(); p++) {  // each 16-byte word holds its chunk id and word index
    uint4* w = static_cast<uint4*>(h.allocs[p]);
    for (int c = 0; c < h.page_chunks; c++)
      for (int j = 0; j < CHUNK_WORDS; j++) w[(size_t)c * CHUNK_WORDS + j] = make_uint4((unsigned)(p * h.page_chunks + c), (unsigned)j, 7u, 9u);
  }
  const uint4** pages_d;
  int32_t* ids;
  uint4* out;
  void *flat_d, *flat_h;
  CK(cudaHostAlloc(&flat_h, (size_t)16384 * CHUNK_WORDS * 16, cudaHostAllocPortable));
  CK(cudaMalloc(&pages_d, h.pages.size() * sizeof(void*)));
  CK(cudaMemcpy(pages_d, h.pages.data(), h.pages.size() * sizeof(void*), cudaMemcpyHostToDevice));
  CK(cudaMalloc(&ids, 16384 * 4));
  CK(cudaMalloc(&out, (size_t)16384 * CHUNK_WORDS * 16));
  CK(cudaMalloc(&flat_d, (size_t)16384 * CHUNK_WORDS * 16));
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  int bad = 0;
  for (int n : {666, 2744, 8192}) {
    std::vector<int32_t> v = random_ids(n, total_chunks);
    CK(cudaMemcpy(ids, v.data(), n * 4, cudaMemcpyHostToDevice));
    std::vector<uint4> got((size_t)n * CHUNK_WORDS);
    auto check = [&](const char* what) {
      CK(cudaMemcpy(got.data(), out, got.size() * 16, cudaMemcpyDeviceToHost));
      for (int c = 0; c < n; c++)
        for (int j = 0; j < CHUNK_WORDS; j++) {
          const uint4 w = got[(size_t)c * CHUNK_WORDS + j];
          if (w.x != (unsigned)v[c] || w.y != (unsigned)j || w.z != 7u || w.w != 9u) {
            if (bad++ < 4) printf("  %s: chunk %d word %d holds (%u, %u), expected (%d, %d)\n", what, c, j, w.x, w.y, v[c], j);
            return;
          }
        }
    };
    const double mb = n * 2048.0 / 1e6;
    auto line = [&](const char* what, float ms) { printf("  %5d chunks  %-44s %7.1f us (%5.1f GB/s)\n", n, what, ms * 1e3, mb / ms); };
    CK(cudaMemset(out, 0, got.size() * 16));
    line("loads, 4 in flight (the step's pattern)", median_ms(20, [&] { GatherInFlight<4><<<2 * sms, 256>>>(pages_d, h.page_chunks, ids, n, out); }));
    check("loads");
    CK(cudaMemset(out, 0, got.size() * 16));
    line("loads, L2::256B hint", median_ms(20, [&] { GatherInFlight<4, true><<<2 * sms, 256>>>(pages_d, h.page_chunks, ids, n, out); }));
    check("L2::256B");
    for (int per_sm : {2, 4, 8}) {
      CK(cudaMemset(out, 0, got.size() * 16));
      char what[64];
      snprintf(what, sizeof what, "bulk copies, %d blocks an SM x 8 stages", per_sm);
      line(what, median_ms(20, [&] { GatherBulk<8><<<per_sm * sms, CHUNK_WORDS>>>(pages_d, h.page_chunks, ids, n, out); }));
      check(what);
    }
    // The copy engine: the same bytes in one contiguous copy (the link's ceiling), then one copy a chunk.
    line("copy engine, one contiguous copy", median_ms(20, [&] { CK(cudaMemcpyAsync(flat_d, flat_h, (size_t)n * 2048, cudaMemcpyHostToDevice, 0)); }));
    std::vector<void*> dsts(n);
    std::vector<const void*> srcs(n);
    std::vector<size_t> sizes(n, 2048);
    for (int c = 0; c < n; c++) {
      dsts[c] = out + (size_t)c * CHUNK_WORDS;
      srcs[c] = static_cast<const uint4*>(h.allocs[v[c] / h.page_chunks]) + (size_t)(v[c] % h.page_chunks) * CHUNK_WORDS;
    }
    cudaMemcpyAttributes attr{};
    attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
    attr.srcLocHint.type = cudaMemLocationTypeHost;
    attr.dstLocHint.type = cudaMemLocationTypeDevice;
    size_t at0 = 0;
    cudaStream_t st;  // a batch refuses the legacy stream; this one is ordered with it
    CK(cudaStreamCreate(&st));
    CK(cudaMemset(out, 0, got.size() * 16));
    line("copy engine, a batch of one copy a chunk", median_ms(20, [&] { CK(cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), n, &attr, &at0, 1, st)); }));
    CK(cudaStreamDestroy(st));
    check("batch");
  }
  CK(cudaGetLastError());
  for (void* p : h.allocs) CK(cudaFreeHost(p));
  CK(cudaFreeHost(flat_h));
  printf("variants: %s\n", bad ? "WRONG BYTES" : "every chunk arrived intact");
  return bad ? 1 : 0;
}

int main(int argc, char** argv) {
  const size_t total = 1ull << 30;  // 1 GB of values: one layer's 4 x 128K
  const int total_chunks = (int)(total / (CHUNK_WORDS * 16));
  if (argc > 1 && !strcmp(argv[1], "variants")) return variants(total);
  int32_t* ids;
  uint4* out;
  const uint4** pages_d;
  CK(cudaMalloc(&ids, 16384 * 4));
  CK(cudaMalloc(&out, (size_t)16384 * CHUNK_WORDS * 16));
  CK(cudaMalloc(&pages_d, 8192 * sizeof(void*)));
  struct Layout { const char* name; size_t page; } layouts[] = {{"one 1 GB allocation", total}, {"512 KB pages", 512 << 10}};
  for (auto& L : layouts) {
    Host h = alloc_host(total, L.page);
    CK(cudaMemcpy(pages_d, h.pages.data(), h.pages.size() * sizeof(void*), cudaMemcpyHostToDevice));
    for (int n : {666, 2744, 8192}) {
      for (int random = 1; random >= 0; random--) {
        std::vector<int32_t> v = random ? random_ids(n, total_chunks) : std::vector<int32_t>(n);
        if (!random) std::iota(v.begin(), v.end(), 12345);
        CK(cudaMemcpy(ids, v.data(), n * 4, cudaMemcpyHostToDevice));
        const double mb = n * 2048.0 / 1e6;
        const float t1 = median_ms(20, [&] { GatherPerChunk<<<n, CHUNK_WORDS>>>(pages_d, h.page_chunks, ids, out); });
        const float t4 = median_ms(20, [&] { GatherInFlight<4><<<264, 256>>>(pages_d, h.page_chunks, ids, n, out); });
        const float t8 = median_ms(20, [&] { GatherInFlight<8><<<528, 256>>>(pages_d, h.page_chunks, ids, n, out); });
        printf("gather %-20s %5d chunks %-11s per-chunk %7.1f us (%5.1f GB/s)  4 in flight %7.1f us (%5.1f GB/s)  8 in flight %7.1f us (%5.1f GB/s)\n",
               L.name, n, random ? "random" : "consecutive", t1 * 1e3, mb / t1, t4 * 1e3, mb / t4, t8 * 1e3, mb / t8);
      }
    }
    CK(cudaGetLastError());
    for (void* p : h.allocs) CK(cudaFreeHost(p));
  }
  // The rebuild alone: U [131072 x 160] bf16, SVh [160 x 128] of one head (ld 1024), C 8, d 128.
  const int S = 131072, rank = 160, d = 128, C = 8;
  void *U, *SV, *K;
  double* inv_freq;
  CK(cudaMalloc(&U, (size_t)S * rank * 2));
  CK(cudaMalloc(&SV, (size_t)rank * 1024 * 2));
  CK(cudaMalloc(&K, (size_t)16384 * C * d * 2));
  CK(cudaMemset(U, 0x3c, (size_t)S * rank * 2));
  CK(cudaMemset(SV, 0x3c, (size_t)rank * 1024 * 2));
  std::vector<double> f(d / 2);
  for (int i = 0; i < d / 2; i++) f[i] = pow(500000.0, -2.0 * i / d);
  CK(cudaMalloc(&inv_freq, f.size() * 8));
  CK(cudaMemcpy(inv_freq, f.data(), f.size() * 8, cudaMemcpyHostToDevice));
  const bool mma = rebuild_mma(U, SKV_BF16, SV, SKV_BF16, 1024, d, rank, C);
  const RebuildArgs a{U, SKV_BF16, rank, SV, SKV_BF16, 1024, d, C, inv_freq, SKV_ROPE_HALF, K, SKV_BF16, d, mma};
  const size_t smem = rebuild_smem_bytes(C, d, mma, rank);
  CK(skv_smem_optin(RebuildOnly, smem));
  for (int n : {666, 2744, 8192}) {
    std::vector<int32_t> v = random_ids(n, S / C);
    CK(cudaMemcpy(ids, v.data(), n * 4, cudaMemcpyHostToDevice));
    const int blocks = (n + rebuild_chunks_per_block(C) - 1) / rebuild_chunks_per_block(C);
    const float t = median_ms(20, [&] { RebuildOnly<<<blocks, REBUILD_THREADS, smem>>>(a, ids, n); });
    printf("rebuild %5d chunks (%d blocks): %7.1f us, %.2f TFLOP/s\n", n, blocks, t * 1e3, 2.0 * n * C * d * rank / t / 1e9);
  }
  // Both at once, as the fused step runs them: the gather on a second stream beside the rebuild.
  {
    Host h = alloc_host(total, 512 << 10);
    CK(cudaMemcpy(pages_d, h.pages.data(), h.pages.size() * sizeof(void*), cudaMemcpyHostToDevice));
    cudaStream_t side;
    cudaEvent_t fork, join;
    CK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    CK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
    CK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
    const bool carveout = getenv("MISS_BENCH_CARVEOUT") != nullptr;
    if (carveout) CK(cudaFuncSetAttribute(GatherInFlight<4>, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
    int sms = 0;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    for (int n : {666, 2744}) {
      std::vector<int32_t> v = random_ids(n, S / C);
      CK(cudaMemcpy(ids, v.data(), n * 4, cudaMemcpyHostToDevice));
      const int blocks = (n + rebuild_chunks_per_block(C) - 1) / rebuild_chunks_per_block(C);
      auto gather = [&](cudaStream_t st) { GatherInFlight<4><<<2 * sms, 256, 0, st>>>(pages_d, h.page_chunks, ids, n, out); };
      const float tg = median_ms(20, [&] { gather(0); });
      const float tr = median_ms(20, [&] { RebuildOnly<<<blocks, REBUILD_THREADS, smem>>>(a, ids, n); });
      const float tb = median_ms(20, [&] {
        CK(cudaEventRecord(fork, 0));
        CK(cudaStreamWaitEvent(side, fork, 0));
        gather(side);
        CK(cudaEventRecord(join, side));
        RebuildOnly<<<blocks, REBUILD_THREADS, smem>>>(a, ids, n);
        CK(cudaStreamWaitEvent(0, join, 0));
      });
      printf("%5d misses: gather (%d x 256, 4 in flight) %6.1f us, rebuild %6.1f us, both on two streams %6.1f us%s\n", n, 2 * sms,
             tg * 1e3, tr * 1e3, tb * 1e3, carveout ? " (gather carveout: max shared)" : "");
    }
    CK(cudaGetLastError());
    for (void* p : h.allocs) CK(cudaFreeHost(p));
  }
  return 0;
}
