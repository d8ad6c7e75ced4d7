// The float64 host steps of low_rank_keys at one 128K-token Llama-3-8B layer (D = 8 x 128, rank
// 160 + oversample 16 = 176 basis rows, 2 power iterations), old (runtime/wasm/subspace.h and jacobi.h at
// 2d4f16f, before the blocked rewrite, which build.sh reads from git into out/v1/) against
// new (runtime/wasm/subspace.h) on one thread and on host threads (kernels/host_pool.h, as the CUDA
// runtime runs them), in one run, alternating, on the same Gram. The host steps only see
// G [D x D] and l x D matrices, so G comes from 4096 keys-like rows (rank-48 signal, channel means,
// noise) instead of 131072: the spectrum's shape, not S, sets their work. The f32 products X = Q G
// run between the steps as in skv_low_rank_keys and are not timed.
// Prints per step the median (and fastest) ms of each, then the accuracy of both against float64 G:
// orthogonality of the last Q, eigenpair residuals |G v - lambda v| / lambda_1, sigma agreement.
// Usage: low_rank_host [reps] [threads]   (threads: default HostPool::default_threads())
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <algorithm>
#include <chrono>
#include <vector>
#include "../../kernels/host_pool.h"
#include "../../runtime/wasm/abi.h"
#include "../../runtime/wasm/subspace.h"
// NOTE: the standard headers the old ones include are already in, so their #includes inside the
// namespace are no-ops; only their functions land in v1.
namespace v1 {
#include "out/v1/subspace.h"
}  // namespace v1

namespace {

const int D = 1024, RANK = 160, OVER = 16, L = RANK + OVER, POWER_ITERS = 2, ROWS = 4096, SIGNAL = 48;

uint64_t lcg = 42;
double urand() {
  lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(lcg >> 11) * 0x1.0p-52 - 1.0;
}

double now_ms() { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// G = K^T K (f32, as the device makes it) for keys-like K [ROWS x D].
std::vector<float> keys_gram() {
  std::vector<float> A((size_t)ROWS * SIGNAL), B((size_t)SIGNAL * D), K((size_t)ROWS * D), G((size_t)D * D);
  for (auto& v : A) v = (float)urand();
  for (int i = 0; i < SIGNAL; i++)
    for (int j = 0; j < D; j++) B[(size_t)i * D + j] = (float)(urand() * pow(0.9, i));
  std::vector<double> mean(D);
  for (auto& m : mean) m = 2 * urand();
  for (int i = 0; i < ROWS; i++)
    for (int j = 0; j < D; j++) {
      double s = mean[j] + 0.05 * urand();
      for (int k = 0; k < SIGNAL; k++) s += A[(size_t)i * SIGNAL + k] * B[(size_t)k * D + j];
      K[(size_t)i * D + j] = (float)s;
    }
  skv_gemm(D, D, ROWS, 1.f, K.data(), SKV_F32, D, 1, nullptr, K.data(), SKV_F32, D, 0, 0.f, G.data(), D);
  return G;
}

struct Result {
  std::vector<double> Q, V, w;
  std::vector<int> ord;
};

struct Times {
  std::vector<double> orth, T, eig, vecs;  // vecs: the whole ritz (eigensolve again, then the vectors)
  void add(double o, double t, double e, double v) { orth.push_back(o); T.push_back(t); eig.push_back(e); vecs.push_back(v); }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One factorization's host steps (new = the shared subspace.h, on `tasks`; else v1), timing each.
Result run(const std::vector<float>& G, bool fresh, const HostTasks& tasks, Times& times) {
  const size_t lD = (size_t)L * D, ll = (size_t)L * L;
  std::vector<float> Qf(lD), X(lD);
  Result r{std::vector<double>(lD), std::vector<double>((size_t)RANK * D), std::vector<double>(L), std::vector<int>(L)};
  std::vector<double> T(ll), Tc(ll), Wt(ll), work(subspace_work(L));
  uint64_t rng = 0x5D1A0C3Bull ^ ((uint64_t)0x5eed << 32 | 0x5eed);
  for (size_t i = 0; i < lD; i++) Qf[i] = (float)uniform(rng);
  double t_orth = 0;
  for (int it = 0; it <= POWER_ITERS; it++) {
    skv_gemm(L, D, D, 1.f, Qf.data(), SKV_F32, D, 0, nullptr, G.data(), SKV_F32, D, 0, 0.f, X.data(), D);
    double t0 = now_ms();
    if (fresh) orthonormalize(X.data(), L, D, r.Q.data(), work.data(), rng, tasks);
    else v1::orthonormalize(X.data(), L, D, r.Q.data(), rng);
    t_orth += now_ms() - t0;
    for (size_t i = 0; i < lD; i++) Qf[i] = (float)r.Q[i];
  }
  skv_gemm(L, D, D, 1.f, Qf.data(), SKV_F32, D, 0, nullptr, G.data(), SKV_F32, D, 0, 0.f, X.data(), D);
  double t0 = now_ms();
  if (fresh) rayleigh_matrix(r.Q.data(), X.data(), L, D, T.data(), tasks);
  else
    for (int a = 0; a < L; a++)
      for (int b = 0; b < L; b++) T[(size_t)a * L + b] = v1::ddot_mixed(r.Q.data() + (size_t)a * D, X.data() + (size_t)b * D, D);
  const double t_T = now_ms() - t0;
  // The eigensolve alone, on a symmetrized copy (ritz below repeats it, then forms the vectors).
  Tc = T;
  for (int a = 0; a < L; a++)
    for (int b = 0; b < a; b++) Tc[(size_t)a * L + b] = Tc[(size_t)b * L + a] = 0.5 * (Tc[(size_t)a * L + b] + Tc[(size_t)b * L + a]);
  t0 = now_ms();
  if (fresh) symmetric_eigen(Tc.data(), L, Wt.data(), r.w.data(), work.data(), tasks);
  else v1::jacobi_eigen(Tc.data(), L, Wt.data(), r.w.data());
  const double t_eig = now_ms() - t0;
  t0 = now_ms();
  if (fresh) ritz(T.data(), L, r.Q.data(), D, RANK, Wt.data(), r.w.data(), r.ord.data(), r.V.data(), work.data(), tasks);
  else v1::ritz(T.data(), L, r.Q.data(), D, RANK, Wt.data(), r.w.data(), r.ord.data(), r.V.data());
  const double t_ritz = now_ms() - t0;
  times.add(t_orth, t_T, t_eig, t_ritz);
  return r;
}

void accuracy(const char* name, const Result& r, const std::vector<double>& G64) {
  double orth = 0;
  for (int a = 0; a < L; a++)
    for (int b = 0; b <= a; b++) {
      double s = 0;
      for (int k = 0; k < D; k++) s += r.Q[(size_t)a * D + k] * r.Q[(size_t)b * D + k];
      orth = std::max(orth, fabs(s - (a == b)));
    }
  const double w1 = r.w[r.ord[0]];
  double res_signal = 0, res_all = 0;
  std::vector<double> gv(D);
  for (int i = 0; i < RANK; i++) {
    const double* v = r.V.data() + (size_t)i * D;
    double e = 0;
    for (int j = 0; j < D; j++) {
      double s = 0;
      for (int k = 0; k < D; k++) s += G64[(size_t)j * D + k] * v[k];
      e += (s - r.w[r.ord[i]] * v[j]) * (s - r.w[r.ord[i]] * v[j]);
    }
    e = sqrt(e) / w1;
    if (i < SIGNAL) res_signal = std::max(res_signal, e);
    res_all = std::max(res_all, e);
  }
  printf("  %-4s max|Q Q^T - I| %.2e, |G v - lambda v| / lambda_1: signal (i < %d) %.2e, all %d %.2e\n", name, orth, SIGNAL,
         res_signal, RANK, res_all);
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? atoi(argv[1]) : 5;
  HostPool pool(argc > 2 ? atoi(argv[2]) : HostPool::default_threads());
  printf("low_rank_keys host steps, D=%d l=%d (rank %d + %d), %d power iterations, median (fastest) of %d, old and new alternate\n",
         D, L, RANK, OVER, POWER_ITERS, reps);
  const std::vector<float> G = keys_gram();
  Times told, tnew, tpool;
  Result old_r, new_r, pool_r;
  for (int rep = 0; rep < reps; rep++) {
    old_r = run(G, false, HostTasks(), told);
    new_r = run(G, true, HostTasks(), tnew);
    pool_r = run(G, true, pool.tasks(), tpool);
  }
  printf("  %-28s %18s %18s %18s\n", "", "old", "new, 1 thread", "new, threads");
  auto cell = [](const std::vector<double>& a) {
    static char buf[4][32];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], 32, "%7.2f (%7.2f)", median(a), *std::min_element(a.begin(), a.end()));
    return buf[k];
  };
  auto line = [&](const char* step, const std::vector<double>& a, const std::vector<double>& b, const std::vector<double>& c) {
    printf("  %-28s %18s %18s %18s   %4.1fx %4.1fx\n", step, cell(a), cell(b), cell(c), median(a) / median(b), median(a) / median(c));
  };
  printf("  (ms; speedups of the medians over old; threads: %d)\n", pool.threads());
  line("orthonormalize x3", told.orth, tnew.orth, tpool.orth);
  line("T = Q X^T", told.T, tnew.T, tpool.T);
  line("eigensolve 176 x 176 alone", told.eig, tnew.eig, tpool.eig);
  line("ritz (eigensolve + vectors)", told.vecs, tnew.vecs, tpool.vecs);
  std::vector<double> sold, snew, spool;
  for (int i = 0; i < reps; i++) {
    sold.push_back(told.orth[i] + told.T[i] + told.vecs[i]);
    snew.push_back(tnew.orth[i] + tnew.T[i] + tnew.vecs[i]);
    spool.push_back(tpool.orth[i] + tpool.T[i] + tpool.vecs[i]);
  }
  line("all (orthonormalize, T, ritz)", sold, snew, spool);
  std::vector<double> G64(G.begin(), G.end());
  accuracy("old", old_r, G64);
  accuracy("new", new_r, G64);
  double dw = 0;
  for (int i = 0; i < RANK; i++)
    dw = std::max(dw, fabs(new_r.w[new_r.ord[i]] - old_r.w[old_r.ord[i]]) / old_r.w[old_r.ord[0]]);
  printf("  eigenvalues new vs old, max |diff| / lambda_1 over %d: %.2e\n", RANK, dw);
  const bool same = new_r.Q == pool_r.Q && new_r.V == pool_r.V && new_r.w == pool_r.w;
  printf("  new on threads = new on one thread, bit for bit: %s\n", same ? "yes" : "NO");
  return same ? 0 : 1;
}
