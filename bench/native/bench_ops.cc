// Native timings of the runtime's hot ops (g++ -O3 -march=native, the same sources as the wasm build).
// Prints one JSON line per op: {"op": ..., "shape": ..., "ms": median}.
// NOTE: the JS benchmark of the wasm build mirrors these shapes; keep the two lists equal:
//   gemm              M=N=K=512, f32, no transposes
//   low_rank_keys     S=8192 D=1024 rank=160 oversample=16 power_iters=2
//   score_chunks      g=4 d=128 n=16384, bf16 landmarks
//   sparse_attention  g=4 d=128, one segment of 32768 tokens, bf16 K/V
//   rebuild_keys      rank=160 d=128 (SV row stride 1024), 256 chunks of C=8, bf16 U/SV/out
//   rope              2048 rows d=128, consecutive positions from 100000, half style
#include <math.h>
#include <stdio.h>
#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>
#include "../../runtime/wasm/abi.h"

namespace {

uint64_t rng = 42;  // fixed seed: every run times the same inputs
float urand() {
  rng = rng * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((double)(rng >> 11) * 0x1.0p-52 - 1.0);
}
std::vector<float> randv(size_t n) { std::vector<float> v(n); for (auto& x : v) x = urand(); return v; }
std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  skv_convert(v.data(), SKV_F32, h.data(), SKV_BF16, (int)v.size());
  return h;
}

double now_ms() { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// One warm-up, then the median of reps timed calls: at least min_reps, and enough for ~0.3 s of
// timed work so fast ops are not one noisy sample (bench/ops.bench.ts uses the same rule).
void bench(const char* op, const char* shape, int min_reps, const std::function<void()>& fn) {
  double t = now_ms();
  fn();
  double warm = now_ms() - t;
  int reps = std::max(min_reps, (int)std::min(2000.0, ceil(300.0 / std::max(warm, 1e-3))));
  std::vector<double> ms;
  for (int r = 0; r < reps; r++) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  printf("{\"op\": \"%s\", \"shape\": \"%s\", \"ms\": %.3f}\n", op, shape, ms[ms.size() / 2]);
  fflush(stdout);
}

}  // namespace

int main() {
  {  // gemm
    int n = 512;
    auto A = randv((size_t)n * n), B = randv((size_t)n * n);
    std::vector<float> C((size_t)n * n);
    bench("gemm", "M=N=K=512", 20, [&] {
      skv_gemm(n, n, n, 1.f, A.data(), SKV_F32, n, 0, nullptr, B.data(), SKV_F32, n, 0, 0.f, C.data(), n);
    });
  }
  {  // low_rank_keys
    int S = 8192, D = 1024, rank = 160;
    auto K = randv((size_t)S * D);
    std::vector<float> U((size_t)S * rank), SV((size_t)rank * D), proj((size_t)D * rank), sigma(rank);
    bench("low_rank_keys", "S=8192 D=1024 rank=160 oversample=16 power_iters=2", 3, [&] {
      skv_low_rank_keys(K.data(), S, D, rank, 16, 2, 1, U.data(), SV.data(), proj.data(), sigma.data());
    });
  }
  {  // score_chunks
    int g = 4, d = 128, n = 16384;
    auto q = randv((size_t)g * d);
    auto L = to_bf16(randv((size_t)n * d));
    std::vector<float> scores(n), work((size_t)g * n);
    bench("score_chunks", "g=4 d=128 n=16384 bf16", 20, [&] {
      skv_score_chunks(q.data(), g, d, 0.0884f, L.data(), SKV_BF16, n, scores.data(), work.data());
    });
  }
  {  // sparse_attention
    int g = 4, d = 128, n = 32768;
    auto q = randv((size_t)g * d);
    auto K = to_bf16(randv((size_t)n * d)), V = to_bf16(randv((size_t)n * d));
    std::vector<float> out((size_t)g * d);
    skv_segment seg{K.data(), V.data(), n, d};
    bench("sparse_attention", "g=4 d=128 n=32768 bf16 (1 segment)", 20, [&] {
      skv_sparse_attention(q.data(), g, d, 0.0884f, &seg, 1, SKV_BF16, out.data());
    });
  }
  {  // rebuild_keys
    int rank = 160, d = 128, ldsv = 1024, nc = 256, C = 8, total_chunks = 4096;
    auto U = to_bf16(randv((size_t)total_chunks * C * rank)), SV = to_bf16(randv((size_t)rank * ldsv));
    std::vector<int32_t> ids(nc);
    for (int i = 0; i < nc; i++) ids[i] = i * (total_chunks / nc) + (i % 7);
    std::vector<double> inv(d / 2);
    for (int i = 0; i < d / 2; i++) inv[i] = 1.0 / pow(500000.0, 2.0 * i / d);
    std::vector<uint16_t> out((size_t)nc * C * d);
    bench("rebuild_keys", "rank=160 d=128 chunks=256 C=8 bf16", 20, [&] {
      skv_rebuild_keys(U.data(), SKV_BF16, rank, SV.data(), SKV_BF16, ldsv, d, ids.data(), nullptr, nc, C,
                       inv.data(), SKV_ROPE_HALF, out.data(), SKV_BF16, d);
    });
  }
  {  // rope
    int rows = 2048, d = 128;
    auto x = randv((size_t)rows * d);
    std::vector<int32_t> pos(rows);
    for (int r = 0; r < rows; r++) pos[r] = 100000 + r;
    std::vector<double> inv(d / 2);
    for (int i = 0; i < d / 2; i++) inv[i] = 1.0 / pow(500000.0, 2.0 * i / d);
    bench("rope", "rows=2048 d=128", 20, [&] {
      skv_rope(x.data(), rows, d, d, pos.data(), inv.data(), SKV_ROPE_HALF, 1);
    });
  }
  return 0;
}
