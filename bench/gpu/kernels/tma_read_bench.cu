// The dense decode attention's reads by the tensor memory accelerator: every key and value row of
// 32 or 128 tasks of 128K keys (d 128, bf16, each task its own copy, as attention_bench lays them
// out), one wave of blocks, each streaming its keys and values through STAGES shared-memory stages
// of ROWS-row tiles. One thread issues a tile as four tensor copies (keys and values, each as two
// 64-column boxes) with the 128-byte swizzle, the layout an ldmatrix over 8 rows reads without bank
// conflicts, on the stage's mbarrier. The question (bench/NOTES.md v19, Next v20): does a
// tensor-mapped read clear the 4.26-4.30 TB/s of one bulk copy a row (attention_bench's ReadBulk<1>,
// the op's pattern) toward SDPA's 4.48? Every byte read is summed (16-bit words) and checked
// against a plain kernel's sum of the same rows. The tensor maps come from cuTensorMapEncodeTiled
// through cudaGetDriverEntryPointByVersion, so nothing links libcuda. Then the same rows by plain
// loads into registers (ReadPlain), at several occupancies. Exits 1 if a sum differs.
// NOTE: on an H200 (bench/NOTES.md v20, v29, v30) every tile pattern read 4.13-4.25 TB/s, plain loads
// 4.36-4.47 with 32+ KB in flight an SM, and producer warps 4.43-4.50 at 3 stages (2 blocks an SM);
// in the attention kernel the producers were slower than its bulk copies (v30).
// Usage: tma_read_bench      (built by bench/gpu/kernels/build.sh; needs an sm_90 GPU)
#include <stdio.h>
#include "tensor_map.cuh"

enum { N = 131072, D = 128, THREADS = 128, BOX_COLS = 64, BOX_ROW_BYTES = BOX_COLS * 2 };

__device__ __forceinline__ uint64_t halves(uint4 x) {
  const uint32_t w[4] = {x.x, x.y, x.z, x.w};
  uint64_t s = 0;
#pragma unroll
  for (int i = 0; i < 4; i++) s += (w[i] & 0xffffu) + (w[i] >> 16);
  return s;
}

__device__ __forceinline__ void block_sum(uint64_t acc, unsigned long long* sum) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (threadIdx.x % 32 == 0) atomicAdd(sum, (unsigned long long)acc);
}

// Block (task, split) reads its keys' and values' rows [split * per, +per) of the task, or with
// `interleave` the task's tiles split, split + splits, ...: then a task's blocks read neighbouring
// tiles at any moment, as one sequential stream, instead of streams `per` rows apart.
template <int ROWS, int STAGES>
__global__ void __launch_bounds__(THREADS) ReadTma(const __grid_constant__ CUtensorMap kmap, const __grid_constant__ CUtensorMap vmap,
                                                  int splits, bool interleave, unsigned long long* sum) {
  using skv_mma::fence_proxy_async, skv_mma::mbar_arrive_expect, skv_mma::mbar_init, skv_mma::mbar_init_fence, skv_mma::mbar_wait;
  constexpr int BOX = ROWS * BOX_ROW_BYTES, STAGE = 4 * BOX;  // keys cols 0-63, 64-127, then values
  extern __shared__ uint8_t raw[];
  uint8_t* sm = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(raw) + 1023) & ~uintptr_t(1023));  // the swizzle's alignment
  __shared__ __align__(8) uint64_t bar[STAGES];
  const int per = N / splits, ntiles = per / ROWS;
  const int row0 = blockIdx.x * N + blockIdx.y * per;
  if (threadIdx.x < STAGES) mbar_init(&bar[threadIdx.x], 1);
  mbar_init_fence();
  __syncthreads();
  auto issue = [&](int i) {
    if (threadIdx.x != 0 || i >= ntiles) return;
    uint8_t* st = sm + (i % STAGES) * STAGE;
    uint64_t* b = &bar[i % STAGES];
    fence_proxy_async();
    mbar_arrive_expect(b, STAGE);
    const int y = interleave ? blockIdx.x * N + (i * splits + blockIdx.y) * ROWS : row0 + i * ROWS;
    tma_box(st, &kmap, 0, y, b);
    tma_box(st + BOX, &kmap, BOX_COLS, y, b);
    tma_box(st + 2 * BOX, &vmap, 0, y, b);
    tma_box(st + 3 * BOX, &vmap, BOX_COLS, y, b);
  };
  for (int i = 0; i < STAGES - 1; i++) issue(i);
  uint64_t acc = 0;
  for (int i = 0; i < ntiles; i++) {
    mbar_wait(&bar[i % STAGES], (unsigned)(i / STAGES) & 1u);
    __syncthreads();  // every thread is done with tile i - 1, whose stage the next copies take
    issue(i + STAGES - 1);
    const uint4* p = reinterpret_cast<const uint4*>(sm + (i % STAGES) * STAGE);
    for (int w = threadIdx.x; w < STAGE / 16; w += THREADS) acc += halves(p[w]);
  }
  block_sum(acc, sum);
}

// The same rows' words summed straight from global memory (the check).
__global__ void SumRows(const uint4* k, const uint4* v, size_t words, unsigned long long* sum) {
  uint64_t acc = 0;
  for (size_t w = blockIdx.x * (size_t)blockDim.x + threadIdx.x; w < words; w += (size_t)gridDim.x * blockDim.x)
    acc += halves(k[w]) + halves(v[w]);
  block_sum(acc, sum);
}

// The same rows by plain 16-byte loads into registers, UNROLL words of keys and of values in
// flight per thread: block (task, split) reads its task's words [split * per, + per) (a stream a
// block, as ReadTma) or, with `interleave`, words split * THREADS + t, + splits * THREADS, ... (a
// task's blocks read neighbouring words at any moment). The question (session 34): is the ~4.2 TB/s
// of every tile pattern above the copy engines' (TMA, bulk, cp.async), or the streams'?
template <int UNROLL>
__global__ void __launch_bounds__(256) ReadPlain(const uint4* k, const uint4* v, int splits, bool interleave, unsigned long long* sum) {
  const size_t words = (size_t)N * D / 8, per = (words + splits - 1) / splits;
  const uint4 *kt = k + blockIdx.x * words, *vt = v + blockIdx.x * words;
  const size_t step = interleave ? (size_t)splits * blockDim.x : blockDim.x;
  const size_t first = interleave ? (size_t)blockIdx.y * blockDim.x : blockIdx.y * per;
  const size_t end = interleave ? words : std::min(words, first + per);
  uint64_t acc = 0;
  for (size_t w = first + threadIdx.x; w < end; w += step * UNROLL) {
    uint4 a[UNROLL], b[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; u++)
      if (w + u * step < end) a[u] = kt[w + u * step], b[u] = vt[w + u * step];
#pragma unroll
    for (int u = 0; u < UNROLL; u++)
      if (w + u * step < end) acc += halves(a[u]) + halves(b[u]);
  }
  block_sum(acc, sum);
}

// The same rows into shared memory by producer warps: PRODUCERS warps after the 4 consumer warps
// each load WORDS 16-byte words of a 64-row tile (its keys, then its values) into registers, all in
// flight together, store them to the tile's stage and arrive on its `full` barrier; the consumers
// (as the tensor-core attention's 4 warps would) wait on it, sum the stage and arrive on `empty`.
// The question (bench/NOTES.md v29): do tiles reach shared memory at the plain loads' rate this way,
// where every copy engine reads ~4.2 TB/s?
template <int PRODUCERS, int STAGES>
__global__ void __launch_bounds__(128 + 32 * PRODUCERS) ReadProduced(const uint4* k, const uint4* v, int splits, int zero,
                                                                      unsigned long long* sum) {
  using skv_mma::mbar_arrive_expect, skv_mma::mbar_init, skv_mma::mbar_wait;
  constexpr int TILE = 64 * (D / 8), PT = 32 * PRODUCERS, WORDS = 2 * TILE / PT;  // words of keys a tile; producer threads
  static_assert(2 * TILE % PT == 0, "whole words a producer");
  extern __shared__ uint4 st[];  // [STAGES][2 x TILE]
  __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
  const size_t words = (size_t)N * D / 8, per = words / splits;
  const uint4 *kt = k + blockIdx.x * words + blockIdx.y * per, *vt = v + blockIdx.x * words + blockIdx.y * per;
  const int ntiles = (int)(per / TILE);
  if (threadIdx.x < STAGES) mbar_init(&full[threadIdx.x], PT), mbar_init(&empty[threadIdx.x], 4);
  __syncthreads();
  if (threadIdx.x >= 128) {  // a producer
    const int pt = threadIdx.x - 128;
    for (int i = 0; i < ntiles; i++) {
      const int s = i % STAGES;
      if (i >= STAGES) mbar_wait(&empty[s], (unsigned)(i / STAGES - 1) & 1u);
      uint4 x[WORDS];
#pragma unroll
      for (int j = 0; j < WORDS; j++)  // j < TILE / PT: keys (PT divides TILE)
        x[j] = j < TILE / PT ? kt[(size_t)i * TILE + j * PT + pt] : vt[(size_t)i * TILE + (j - TILE / PT) * PT + pt];
      // NOTE: every store's address depends on every load (zero is 0 at run time, which the
      // compiler cannot know), so all of the tile's loads are in flight before the first store
      // waits: left to itself (or tied to one load) ptxas interleaved loads and stores at 40 registers.
      unsigned any = 0;
#pragma unroll
      for (int j = 0; j < WORDS; j++) any |= x[j].x;
      uint4* dst = st + s * 2 * TILE + pt + (any & zero);
#pragma unroll
      for (int j = 0; j < WORDS; j++) dst[j * PT] = x[j];
      mbar_arrive_expect(&full[s], 0);
    }
    return;
  }
  uint64_t acc = 0;
  for (int i = 0; i < ntiles; i++) {
    const int s = i % STAGES;
    mbar_wait(&full[s], (unsigned)(i / STAGES) & 1u);
    for (int w = threadIdx.x; w < 2 * TILE; w += 128) acc += halves(st[s * 2 * TILE + w]);
    __syncwarp();
    if (threadIdx.x % 32 == 0) mbar_arrive_expect(&empty[s], 0);
  }
  block_sum(acc, sum);
}

// Words that differ by their global index, so that a box read from the wrong rows changes the sum.
__global__ void Fill(uint16_t* x, size_t n, uint64_t salt) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    x[i] = (uint16_t)(((i + salt) * 2654435761ull) >> 13);
}

int failures = 0;

// The check of every variant: one more launch's sum against the plain kernel's over the same
// ntasks tasks' rows; counts a failure and returns "ok" or "DIFFERS".
template <class Launch>
const char* check_sum(Launch&& launch, const uint16_t* k, const uint16_t* v, int ntasks, unsigned long long* sum) {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  unsigned long long got = 0, want = 0;
  CK(cudaMemset(sum, 0, sizeof got));
  launch();
  CK(cudaMemcpy(&got, sum, sizeof got, cudaMemcpyDeviceToHost));
  CK(cudaMemset(sum, 0, sizeof want));
  SumRows<<<4 * sms, 256>>>(reinterpret_cast<const uint4*>(k), reinterpret_cast<const uint4*>(v), (size_t)ntasks * N * D / 8, sum);
  CK(cudaMemcpy(&want, sum, sizeof want, cudaMemcpyDeviceToHost));
  failures += got != want;
  return got == want ? "ok" : "DIFFERS";
}

template <int ROWS, int STAGES>
void run(uint16_t* k, uint16_t* v, int ntasks, bool interleave, unsigned long long* sum) {
  constexpr size_t smem = (size_t)STAGES * 4 * ROWS * BOX_ROW_BYTES + 1024;
  CK(cudaFuncSetAttribute(ReadTma<ROWS, STAGES>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  int sms = 0, per_sm = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, ReadTma<ROWS, STAGES>, THREADS, smem));
  int splits = 1;  // one wave, as AttentionSplits picks, in powers of two so that the splits are whole tiles
  while (splits * 2 <= 32 && ntasks * splits * 2 <= sms * per_sm) splits *= 2;
  const CUtensorMap km = bf16_swizzled_map(k, (uint64_t)ntasks * N, D, BOX_COLS, ROWS), vm = bf16_swizzled_map(v, (uint64_t)ntasks * N, D, BOX_COLS, ROWS);
  const dim3 grid(ntasks, splits);
  const auto launch = [&] {
    ReadTma<ROWS, STAGES><<<grid, THREADS, smem>>>(km, vm, splits, interleave, sum);
    CK(cudaGetLastError());
  };
  const float ms = median_ms(20, launch);
  const double bytes = 2.0 * ntasks * N * D * 2;
  printf("%3d tasks, %3d-row tiles x %d stages (%zu KB, %d blocks an SM), %2d splits%s: %.3f ms (%.2f TB/s), sum %s\n", ntasks, ROWS,
         STAGES, smem / 1024, per_sm, splits, interleave ? " interleaved" : "", ms, bytes / ms / 1e9, check_sum(launch, k, v, ntasks, sum));
}

int main() {
  const int max_tasks = 128;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("%s, %d SMs, CUDA %d.%d\n", prop.name, prop.multiProcessorCount, CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
  uint16_t *k, *v;
  const size_t elems = (size_t)max_tasks * N * D;
  CK(cudaMalloc(&k, elems * 2));
  CK(cudaMalloc(&v, elems * 2));
  Fill<<<1024, 256>>>(k, elems, 0);
  Fill<<<1024, 256>>>(v, elems, elems);
  CK(cudaGetLastError());
  unsigned long long* sum;
  CK(cudaMalloc(&sum, sizeof(unsigned long long)));
  for (int ntasks : {32, 128})
    for (bool interleave : {false, true}) {
      run<64, 3>(k, v, ntasks, interleave, sum);
      run<64, 6>(k, v, ntasks, interleave, sum);
      run<128, 3>(k, v, ntasks, interleave, sum);
    }
  // Plain loads: (threads a block, blocks an SM, words in flight a thread); 128 x 2 is the
  // tensor-core attention kernel's occupancy (its registers could not hold more than ~8 words).
  struct Plain { int threads, per_sm, unroll; };
  for (const Plain c : {Plain{256, 2, 1}, Plain{256, 2, 4}, Plain{256, 4, 1}, Plain{256, 4, 4}, Plain{256, 8, 1}, Plain{256, 8, 4},
                        Plain{128, 2, 4}, Plain{128, 2, 8}, Plain{128, 4, 8}})
    for (bool interleave : {false, true}) {
      const dim3 grid(32, (unsigned)(c.per_sm * prop.multiProcessorCount / 32));
      auto kernel = c.unroll == 1 ? ReadPlain<1> : c.unroll == 4 ? ReadPlain<4> : ReadPlain<8>;
      const auto launch = [&] { kernel<<<grid, c.threads>>>(reinterpret_cast<const uint4*>(k), reinterpret_cast<const uint4*>(v), (int)grid.y, interleave, sum); };
      const float ms = median_ms(20, launch);
      printf(" 32 tasks, plain loads x %d, %d blocks of %d an SM, %2u splits%s: %.3f ms (%.2f TB/s), sum %s\n", c.unroll, c.per_sm, c.threads,
             grid.y, interleave ? " interleaved" : "", ms, 2.0 * 32 * N * D * 2 / ms / 1e9, check_sum(launch, k, v, 32, sum));
    }
  // Producer warps: (producer warps, stages); 2 blocks an SM at 3 stages (96 KB), 1 at 6.
  const auto produced = [&](auto kernel, int producers, int stages) {
    const size_t smem = (size_t)stages * 2 * 64 * (D / 8) * 16;
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 128 + 32 * producers, smem));
    int splits = 1;
    while (splits * 2 <= 32 && 32 * splits * 2 <= prop.multiProcessorCount * per_sm) splits *= 2;
    const dim3 grid(32, splits);
    const auto launch = [&] { kernel<<<grid, 128 + 32 * producers, smem>>>(reinterpret_cast<const uint4*>(k), reinterpret_cast<const uint4*>(v), splits, 0, sum); };
    const float ms = median_ms(20, launch);
    printf(" 32 tasks, %d producer warps (%d words a thread) x %d stages (%zu KB, %d blocks an SM), %2d splits: %.3f ms (%.2f TB/s), sum %s\n",
           producers, 2 * 64 * (D / 8) / (32 * producers), stages, smem / 1024, per_sm, splits, ms, 2.0 * 32 * N * D * 2 / ms / 1e9,
           check_sum(launch, k, v, 32, sum));
  };
  produced(ReadProduced<2, 3>, 2, 3);
  produced(ReadProduced<4, 3>, 4, 3);
  produced(ReadProduced<8, 3>, 8, 3);
  produced(ReadProduced<2, 6>, 2, 6);
  produced(ReadProduced<4, 6>, 4, 6);
  // A plain grid-stride read of 32 tasks' rows (every block's loads neighbour the others'), for scale.
  const size_t words = (size_t)32 * N * D / 8;
  for (int per_sm : {4, 8, 16}) {
    const float ms = median_ms(20, [&] { SumRows<<<per_sm * prop.multiProcessorCount, 256>>>(reinterpret_cast<const uint4*>(k), reinterpret_cast<const uint4*>(v), words, sum); });
    printf(" 32 tasks, grid-stride uint4 loads, %2d blocks of 256 an SM: %.3f ms (%.2f TB/s)\n", per_sm, ms, 2.0 * 32 * N * D * 2 / ms / 1e9);
  }
  printf(failures ? "FAILED (%d sums differ)\n" : "OK (%d failed checks)\n", failures);
  return failures ? 1 : 0;
}
