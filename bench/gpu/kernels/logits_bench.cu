// The landmark logits of the fused decode step (score.cuh): the tensor-core path (logits_mma.cuh)
// against the SIMT path and a float64 reference, at Llama-3-8B's 128K (16K bf16 landmarks of 128
// dims per kv head, 4 query heads), for 8, 32, 128 and 344 tasks (1, 4, 16 and 43 rows x 8 kv
// heads), with the logit_blocks ranges shared by 33 (one each), 8, 4, 2 and 1 blocks per task.
// Errors are |logit - ref| / (scale * sum |q| |L|), the dot product's own scale. Exits 1 if the
// tensor-core path is off by more than 1e-6 of it.
// `logits_bench interleave`: only main's kernel against Interleaved (below) at 8, 16, 32 and 128
// tasks, outputs compared bit for bit. Exits 1 if they differ.
// Usage: logits_bench [interleave]     (built by bench/gpu/kernels/build.sh; needs a GPU)
#include <stdio.h>
#include <string.h>
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

// A candidate for the logits at few rows (bench/NOTES.md Next v45 item 1), not on main: ncu found
// logits_group_mma latency-bound at its 2 blocks an SM (0.82 eligible warps a scheduler). Here a
// block of 128 threads (4 warps, so the registers allow up to 255) gives each warp two 16-row
// m-blocks of every 128-row tile, their mma chains interleaved and fed by one set of B fragments,
// held in registers (REGB) or in shared memory as main's. The arithmetic of every logit is main's
// (the same k-steps and parts in the same order), so the outputs are the same bits.
template <bool REGB>
__global__ void __launch_bounds__(128, 2) Interleaved(const float* q, const uint16_t* lm, float scale, float* logits, float* maxes) {
  constexpr int ROW_BYTES = D * 2, KS = D / 16, MB = 2;
  __shared__ float red[4 * LOGIT_MMA_HEADS];
  __shared__ uint2 frag[KS][3][32];
  extern __shared__ __align__(16) char stage[];
  const int task = blockIdx.x, nb = logit_blocks(L), per = (nb + (int)gridDim.y - 1) / (int)gridDim.y;
  const int b0 = (int)blockIdx.y * per, b1 = min(nb, b0 + per);
  if (b0 >= nb) return;
  const float* qt = q + (size_t)task * G * D;
  float* out = logits + (size_t)task * G * L;
  float* mxs = maxes + ((size_t)task * nb + b0) * G;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  LogitTiles<D, LOGIT_STAGES, LOGIT_TILE_BYTES> tiles(lm + (size_t)task * L * D, L, nb, b0, b1, stage);
  for (int t = 0; t < LOGIT_STAGES - 1; t++) tiles.issue();
  uint2 breg[REGB ? KS : 1][3];
  auto bfrag = [&](int ks, int l, uint2 (&out3)[3]) {
    const int hn = l / 4, e = ks * 16 + (l % 4) * 2;
    uint32_t part[3][2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const float x = hn < G ? qt[(size_t)hn * D + e + 8 * h] : 0.f, y = hn < G ? qt[(size_t)hn * D + e + 8 * h + 1] : 0.f;
      split3_bf16x2(x, y, part[0][h], part[1][h], part[2][h]);
    }
#pragma unroll
    for (int p = 0; p < 3; p++) out3[p] = make_uint2(part[p][0], part[p][1]);
  };
  if constexpr (REGB) {
#pragma unroll
    for (int ks = 0; ks < KS; ks++) bfrag(ks, lane, breg[ks]);
  } else {
    for (int i = threadIdx.x; i < KS * 32; i += blockDim.x) {
      uint2 f3[3];
      bfrag(i / 32, i % 32, f3);
      for (int p = 0; p < 3; p++) frag[i / 32][p][i % 32] = f3[p];
    }
  }
  const int ranges = b1 - b0, per_range = tiles.per_range;
  float mx[2] = {-INFINITY, -INFINITY};
  for (int k = 0, t = 0, at = 0; k < ranges;) {
    skv_mma::cp_async_wait<LOGIT_STAGES - 2>();
    __syncthreads();
    tiles.issue();
    const char* tile = stage + at * LOGIT_TILE_BYTES;
    at = at == LOGIT_STAGES - 1 ? 0 : at + 1;
    int r0;
    const int rn = tiles.rows_of(k, t, &r0);
    for (int m0 = warp * 16 * MB; m0 < rn; m0 += warps * 16 * MB) {
      float acc[MB][4] = {};
      int arow[MB];
#pragma unroll
      for (int mb = 0; mb < MB; mb++) arow[mb] = m0 + mb * 16 + lane % 8 + 8 * ((lane / 8) % 2);
#pragma unroll
      for (int ks = 0; ks < KS; ks++) {
        uint32_t a[MB][4];
#pragma unroll
        for (int mb = 0; mb < MB; mb++)
          skv_mma::ldsm_x4(a[mb], reinterpret_cast<const uint16_t*>(tile + arow[mb] * ROW_BYTES + logits_swizzle(arow[mb], ks * 2 + lane / 16) * 16));
        float c[MB][4] = {};
#pragma unroll
        for (int p = 2; p >= 0; p--) {
          uint2 b;
          if constexpr (REGB) b = breg[ks][p];
          else b = skv_mma::lds_u2(&frag[ks][p][lane]);
#pragma unroll
          for (int mb = 0; mb < MB; mb++) skv_mma::mma_bf16(c[mb], a[mb], b.x, b.y);
        }
#pragma unroll
        for (int mb = 0; mb < MB; mb++)
#pragma unroll
          for (int i = 0; i < 4; i++) acc[mb][i] = __fadd_rn(acc[mb][i], c[mb][i]);
      }
#pragma unroll
      for (int mb = 0; mb < MB; mb++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
          const int row = m0 + mb * 16 + lane / 4 + (i >= 2 ? 8 : 0), head = (lane % 4) * 2 + i % 2;
          if (row < rn && head < G) {
            const float v = acc[mb][i] * scale;
            out[(size_t)head * L + r0 + row] = v;
            mx[i % 2] = v > mx[i % 2] ? v : mx[i % 2];
          }
        }
    }
    if (++t < per_range) continue;
    t = 0;
#pragma unroll
    for (int o = 4; o < 32; o <<= 1)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const float v = __shfl_xor_sync(0xffffffffu, mx[h], o);
        mx[h] = v > mx[h] ? v : mx[h];
      }
    if (lane < 4) {
      red[warp * LOGIT_MMA_HEADS + lane * 2] = mx[0];
      red[warp * LOGIT_MMA_HEADS + lane * 2 + 1] = mx[1];
    }
    mx[0] = mx[1] = -INFINITY;
    __syncthreads();
    if (threadIdx.x < G) {
      float m = -INFINITY;
      for (int w = 0; w < warps; w++) m = red[w * LOGIT_MMA_HEADS + threadIdx.x] > m ? red[w * LOGIT_MMA_HEADS + threadIdx.x] : m;
      mxs[(size_t)k * G + threadIdx.x] = m;
    }
    k++;
  }
  skv_mma::cp_async_wait<0>();
}

// Main's kernel against Interleaved<false / true>, one range a block (the step's split at 1-4 rows),
// alternated in rounds; exits 1 if any logit or range maximum differs from main's.
static int interleave(const float* q, const uint16_t* lm, float scale, float* fast, float* other, float* maxes, float* maxes2) {
  CK(skv_smem_optin(Interleaved<false>, LOGIT_SMEM));
  CK(skv_smem_optin(Interleaved<true>, LOGIT_SMEM));
  const int nb = logit_blocks(L);
  int bad = 0;
  for (int tasks : {8, 16, 32, 128}) {
    const size_t m = (size_t)tasks * G * L, mm = (size_t)tasks * nb * G;
    const dim3 grid(tasks, nb);
    const double mb = tasks * (double)L * D * 2 / 1e6;
    std::vector<float> a(m), b(m), ma(mm), mb2(mm);
    float t[3][3];
    for (int r = 0; r < 3; r++) {
      t[r][0] = median_ms(50, [&] { Fast<<<grid, LOGIT_THREADS, LOGIT_SMEM>>>(q, lm, scale, fast, maxes); });
      t[r][1] = median_ms(50, [&] { Interleaved<false><<<grid, 128, LOGIT_SMEM>>>(q, lm, scale, other, maxes2); });
      t[r][2] = median_ms(50, [&] { Interleaved<true><<<grid, 128, LOGIT_SMEM>>>(q, lm, scale, other, maxes2); });
    }
    CK(cudaMemcpy(a.data(), fast, m * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(ma.data(), maxes, mm * 4, cudaMemcpyDeviceToHost));
    for (int v = 0; v < 2; v++) {
      CK(cudaMemset(other, 0, m * 4));
      CK(cudaMemset(maxes2, 0, mm * 4));
      if (v == 0) Interleaved<false><<<grid, 128, LOGIT_SMEM>>>(q, lm, scale, other, maxes2);
      else Interleaved<true><<<grid, 128, LOGIT_SMEM>>>(q, lm, scale, other, maxes2);
      CK(cudaMemcpy(b.data(), other, m * 4, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(mb2.data(), maxes2, mm * 4, cudaMemcpyDeviceToHost));
      const bool same = !memcmp(a.data(), b.data(), m * 4) && !memcmp(ma.data(), mb2.data(), mm * 4);
      if (!same) printf("  %d tasks: Interleaved<%s> differs from main's kernel\n", tasks, v ? "regs" : "smem");
      bad += !same;
    }
    printf("%3d tasks (%4.0f MB), one range a block, us by round: main", tasks, mb);
    for (int r = 0; r < 3; r++) printf(" %6.1f", t[r][0] * 1e3);
    printf(" | interleaved, B in shared memory");
    for (int r = 0; r < 3; r++) printf(" %6.1f", t[r][1] * 1e3);
    printf(" | interleaved, B in registers");
    for (int r = 0; r < 3; r++) printf(" %6.1f", t[r][2] * 1e3);
    printf("\n");
  }
  CK(cudaGetLastError());
  printf("interleave: %s\n", bad ? "OUTPUTS DIFFER" : "every logit and range maximum the same bits as main's kernel");
  return bad ? 1 : 0;
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

int main(int argc, char** argv) {
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
  if (argc > 1 && !strcmp(argv[1], "interleave")) {
    float* maxes2;
    CK(cudaMalloc(&maxes2, (size_t)max_tasks * LOGIT_MAX_BLOCKS * G * 4));
    return interleave(q, lm, scale, fast, simt, maxes, maxes2);
  }
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
