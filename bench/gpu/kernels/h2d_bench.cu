// What a prompt's host arrays cost to go up: prefill writes a 128K-token row of one Llama-3-8B
// layer's keys and values from the caller's (pageable) arrays as 16 writes of 32 MiB (8 kv heads x
// keys and values, bf16; packages/shadowkv/src/policies/BaseKVCache.ts writePrompt), each a
// cudaMemcpy from pageable memory (runtime/cuda/memory.cc Write). Times, in one run, the same 512 MiB:
//   pageable   16 x cudaMemcpy from malloc'd memory, as now
//   register   16 x (cudaHostRegister, cudaMemcpyAsync, cudaHostUnregister) of the caller's range
//   staged/N   16 x a pipeline through two pinned 8 MiB halves: N host threads copy a half while the
//              copy engine sends the other
// and, for scale, one cudaMemcpyAsync of 512 MiB from pinned memory.
// Usage: h2d_bench     (built by bench/gpu/kernels/build.sh; needs a GPU)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "bench_util.cuh"

static double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

constexpr size_t PIECE = 32u << 20, PIECES = 16, HALF = 8u << 20;

// memcpy of n bytes on `threads` threads (this one among them).
static void copy_on(char* dst, const char* src, size_t n, int threads) {
  std::vector<std::thread> pool;
  const size_t per = (n + threads - 1) / threads;
  for (int t = 1; t < threads; t++) {
    const size_t b = std::min(n, t * per), e = std::min(n, b + per);
    pool.emplace_back([=] { memcpy(dst + b, src + b, e - b); });
  }
  memcpy(dst, src, std::min(n, per));
  for (auto& th : pool) th.join();
}

// One piece through the two pinned halves: a half is refilled only once its last copy has run.
static void staged(char* dev, const char* src, size_t n, char* halves, cudaEvent_t sent[2], cudaStream_t s, int threads) {
  int h = 0;
  for (size_t off = 0; off < n; off += HALF, h ^= 1) {
    const size_t m = std::min(HALF, n - off);
    CK(cudaEventSynchronize(sent[h]));
    copy_on(halves + h * HALF, src + off, m, threads);
    CK(cudaMemcpyAsync(dev + off, halves + h * HALF, m, cudaMemcpyHostToDevice, s));
    CK(cudaEventRecord(sent[h], s));
  }
}

int main() {
  const size_t total = PIECE * PIECES;
  CK(cudaFree(nullptr));  // the context, outside the timings
  char* dev;
  CK(cudaMalloc(&dev, total));
  char* src = static_cast<char*>(aligned_alloc(4096, total));
  for (size_t i = 0; i < total; i++) src[i] = (char)(i * 131);  // the pages exist, as a JS array's do
  char *halves, *pinned;
  CK(cudaHostAlloc(&halves, 2 * HALF, cudaHostAllocDefault));
  CK(cudaHostAlloc(&pinned, total, cudaHostAllocDefault));
  memcpy(pinned, src, total);
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t sent[2];
  for (auto& e : sent) {
    CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    CK(cudaEventRecord(e, s));
  }
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  auto gbs = [&](double ms) { return total / ms / 1e6; };
  auto check = [&](const char* what) {  // the bytes arrived
    std::vector<char> back(4096);
    for (size_t at : {size_t(0), total / 2 + 12345, total - 4096}) {
      CK(cudaMemcpy(back.data(), dev + at, back.size(), cudaMemcpyDeviceToHost));
      if (memcmp(back.data(), src + at, back.size())) fprintf(stderr, "h2d_bench: %s: wrong bytes at %zu\n", what, at), exit(1);
    }
    CK(cudaMemset(dev, 0, total));
    CK(cudaDeviceSynchronize());
  };
  for (int rep = 0; rep < 3; rep++) {
    double t = now_ms();
    for (size_t p = 0; p < PIECES; p++) CK(cudaMemcpy(dev + p * PIECE, src + p * PIECE, PIECE, cudaMemcpyHostToDevice));
    const double pageable = now_ms() - t;
    check("pageable");
    t = now_ms();
    for (size_t p = 0; p < PIECES; p++) {
      CK(cudaHostRegister(src + p * PIECE, PIECE, cudaHostRegisterDefault));
      CK(cudaMemcpyAsync(dev + p * PIECE, src + p * PIECE, PIECE, cudaMemcpyHostToDevice, s));
      CK(cudaStreamSynchronize(s));
      CK(cudaHostUnregister(src + p * PIECE));
    }
    const double reg = now_ms() - t;
    check("register");
    printf("run %d, 16 x 32 MiB: pageable %.1f ms (%.1f GB/s), register %.1f ms (%.1f GB/s)", rep, pageable, gbs(pageable), reg, gbs(reg));
    for (int threads : {1, 2, 4, (int)std::min(8u, hw)}) {
      t = now_ms();
      for (size_t p = 0; p < PIECES; p++) staged(dev + p * PIECE, src + p * PIECE, PIECE, halves, sent, s, threads);
      CK(cudaStreamSynchronize(s));
      const double st = now_ms() - t;
      check("staged");
      printf(", staged/%d %.1f ms (%.1f GB/s)", threads, st, gbs(st));
    }
    t = now_ms();
    CK(cudaMemcpyAsync(dev, pinned, total, cudaMemcpyHostToDevice, s));
    CK(cudaStreamSynchronize(s));
    const double one = now_ms() - t;
    check("pinned");
    printf(" | one pinned copy %.1f ms (%.1f GB/s)\n", one, gbs(one));
  }
  return 0;
}
