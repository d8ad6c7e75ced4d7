// What the host tier costs at compression: one 128K-token row of one Llama-3-8B layer puts 268 MB
// of values (8 kv heads x 131072 x 128 x bf16) into pinned, mapped host pages of 512 KB. Times, in
// one run: allocating the pages (cudaHostAlloc each, as runtime/cuda/memory.cc does, with and
// without the memset that zeroes them), one allocation of the whole, cudaHostRegister of plain
// malloc'd memory, and the device -> host copy of the values as one copy per page against one copy.
// Usage: host_pages_bench     (built by bench/gpu/kernels/build.sh; needs a GPU)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <chrono>
#include <vector>

#include "bench_util.cuh"

static double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main() {
  const size_t page = 512 << 10, total = 268435456, pages = total / page;
  const unsigned flags = cudaHostAllocMapped | cudaHostAllocPortable;
  CK(cudaFree(nullptr));  // the context, outside the timings
  void* dev;
  CK(cudaMalloc(&dev, total));
  CK(cudaMemset(dev, 1, total));
  for (int rep = 0; rep < 2; rep++) {
    std::vector<void*> p(pages);
    double t = now_ms();
    for (auto& x : p) CK(cudaHostAlloc(&x, page, flags));
    const double alloc = now_ms() - t;
    t = now_ms();
    for (auto& x : p) memset(x, 0, page);
    const double zero = now_ms() - t;
    t = now_ms();
    for (size_t i = 0; i < pages; i++) CK(cudaMemcpyAsync(p[i], static_cast<char*>(dev) + i * page, page, cudaMemcpyDeviceToHost, 0));
    CK(cudaStreamSynchronize(0));
    const double copies = now_ms() - t;
    t = now_ms();
    for (auto& x : p) CK(cudaFreeHost(x));
    const double release = now_ms() - t;
    void* one;
    t = now_ms();
    CK(cudaHostAlloc(&one, total, flags));
    const double alloc_one = now_ms() - t;
    t = now_ms();
    CK(cudaMemcpyAsync(one, dev, total, cudaMemcpyDeviceToHost, 0));
    CK(cudaStreamSynchronize(0));
    const double copy_one = now_ms() - t;
    t = now_ms();
    CK(cudaFreeHost(one));
    const double release_one = now_ms() - t;
    void* m = aligned_alloc(4096, total);
    memset(m, 0, total);  // the pages exist before they are registered
    t = now_ms();
    CK(cudaHostRegister(m, total, cudaHostRegisterMapped | cudaHostRegisterPortable));
    const double reg = now_ms() - t;
    CK(cudaHostUnregister(m));
    free(m);
    printf("run %d, 268 MB: %zu x cudaHostAlloc(512 KB) %.1f ms, their memset %.1f ms, %zu copies D2H %.1f ms (%.1f GB/s), "
           "cudaFreeHost x %zu %.1f ms | one cudaHostAlloc %.1f ms, one copy %.1f ms (%.1f GB/s), free %.1f ms | cudaHostRegister %.1f ms\n",
           rep, pages, alloc, zero, pages, copies, total / copies / 1e6, pages, release, alloc_one, copy_one, total / copy_one / 1e6,
           release_one, reg);
  }
  CK(cudaFree(dev));
  return 0;
}
