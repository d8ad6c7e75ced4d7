// Independent tasks of the float64 host steps (subspace.h, symmetric_eigen.h): run one after the
// other here in wasm, handed to host threads by the CUDA runtime (kernels/host_pool.h).
// NOTE: every task writes outputs no other task writes and sums in an order fixed by the code, so
// the bits never depend on how, or on how many threads, the tasks run.
#pragma once

struct HostTasks {
  // Runs task(ctx, t) for every t < n and returns when all have finished; null: in turn, here.
  void (*run)(void* pool, int n, void (*task)(void*, int), void* ctx) = nullptr;
  void* pool = nullptr;

  // f(begin, end) over [0, n) cut into ranges of `block` (the last shorter), one task each; one
  // range when there are no threads (tasks cost nothing to cut then, but short ranges run slower).
  template <class F>
  void ranges(int n, int block, const F& f) const {
    if (!run) return f(0, n);
    each((n + block - 1) / block, [&](int t) { f(t * block, t * block + block < n ? t * block + block : n); });
  }

  template <class F>
  void each(int n, const F& f) const {
    if (!run || n <= 1) {
      for (int t = 0; t < n; t++) f(t);
      return;
    }
    run(pool, n, [](void* c, int t) { (*static_cast<const F*>(c))(t); }, const_cast<F*>(&f));
  }
};
