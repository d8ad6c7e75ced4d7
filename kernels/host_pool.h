// Host threads for the float64 steps of LowRankKeys (runtime/wasm/subspace.h runs them as
// HostTasks). Started for one call and joined at its end; between batches of tasks the workers
// spin, because a batch is tens of microseconds of work and waking sleeping threads costs as much.
// NOTE: which thread runs which task changes nothing in the results (host_tasks.h).
// Plain C++ (no CUDA): the native tests and benchmarks use it too.
#pragma once
#include <stdint.h>
#include <stdlib.h>
#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>
#include "../runtime/wasm/host_tasks.h"

class HostPool {
 public:
  // Threads for the host steps: the machine's, at most 8 (the products have ~20 tasks), this one included.
  // SKV_HOST_THREADS=n (benchmarks) overrides it.
  static int default_threads() {
    if (const char* v = getenv("SKV_HOST_THREADS")) return std::max(1, std::min(64, atoi(v)));
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : (int)(n < 8 ? n : 8);
  }

  // NOTE: if the system gives fewer threads than asked, the pool runs with those it got.
  explicit HostPool(int threads) {
#if defined(__cpp_exceptions)
    try {
      for (int w = 1; w < threads; w++) workers_.emplace_back([this] { serve(); });
    } catch (...) {
    }
#else
    for (int w = 1; w < threads; w++) workers_.emplace_back([this] { serve(); });
#endif
  }

  int threads() const { return 1 + (int)workers_.size(); }

  ~HostPool() {
    stop_.store(true, std::memory_order_release);
    for (auto& t : workers_) t.join();
  }

  // What HostTasks calls: this pool when it has workers, else in turn on the caller.
  HostTasks tasks() {
    HostTasks t;
    if (!workers_.empty()) t.run = &HostPool::run, t.pool = this;
    return t;
  }

 private:
  struct Batch {
    int n;
    void (*task)(void*, int);
    void* ctx;
    uint64_t epoch;
    std::atomic<int> next{0};
  };

  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }

  static void work(Batch* b) {
    for (int t; (t = b->next.fetch_add(1, std::memory_order_relaxed)) < b->n;) b->task(b->ctx, t);
  }

  // The caller publishes the batch (on its stack), works through it too, closes it and waits only
  // for the workers that joined it; one that wakes late finds it closed and leaves it alone.
  // NOTE: a worker joins (users_ + 1) before it reads batch_, and the caller closes batch_ before it
  // reads users_ (both sequentially consistent), so it never returns while a joined worker still
  // holds the batch.
  static void run(void* pool, int n, void (*task)(void*, int), void* ctx) {
    HostPool* p = static_cast<HostPool*>(pool);
    Batch b;
    b.n = n, b.task = task, b.ctx = ctx, b.epoch = p->epoch_.load(std::memory_order_relaxed) + 1;
    p->batch_.store(&b, std::memory_order_seq_cst);
    p->epoch_.store(b.epoch, std::memory_order_release);
    work(&b);
    p->batch_.store(nullptr, std::memory_order_seq_cst);
    while (p->users_.load(std::memory_order_seq_cst) != 0) pause();
  }

  void serve() {
    uint64_t done = 0;
    for (;;) {
      uint64_t epoch;
      while ((epoch = epoch_.load(std::memory_order_acquire)) == done) {
        if (stop_.load(std::memory_order_acquire)) return;
        pause();
      }
      users_.fetch_add(1, std::memory_order_seq_cst);
      Batch* b = batch_.load(std::memory_order_seq_cst);
      if (b) work(b);
      done = b ? b->epoch : epoch;
      users_.fetch_sub(1, std::memory_order_release);
    }
  }

  std::atomic<uint64_t> epoch_{0};  // of the last batch published
  std::atomic<Batch*> batch_{nullptr};  // the open batch, if any
  std::atomic<int> users_{0};  // workers that joined it
  std::atomic<bool> stop_{false};
  std::vector<std::thread> workers_;
};
