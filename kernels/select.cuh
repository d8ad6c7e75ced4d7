// Block-wide pieces of chunk selection, shared by the single ops (score_chunks.cu,
// select_chunks.cu) and the fused decode step (decode_layer.cu), so both give the same bits:
// the softmax statistics of the query heads' landmark logits, an exact top-k radix select (which
// stops as soon as the threshold's prefix is taken whole) and an ordered compaction. Every function is called by all threads of the block (SELECT_THREADS).
#pragma once
#include <cooperative_groups.h>
#include <type_traits>
#include "common.cuh"
#include "dtype.cuh"

enum { SELECT_THREADS = 1024, RADIX = 256 };

// ---- landmark scores ----

// Heads per pass and loads in flight per thread of the softmax sums and the scores. NOTE: sized for
// registers: 8 heads x 4 steps made the sums kernel 118 registers, 2 blocks per SM and 4 waves at
// 4 x 128K (22 us); 4 x 2 is 48 registers (12 us), and 2 chunks a thread keep the scores at 40 (H200).
enum { SOFTMAX_HEADS = 4, SUMS_UNROLL = 2, SCORE_BATCH = 2, FOLD_ROWS = 64 };

// done(j, fold(...fold(init, in[0][j])..., in[nb-1][j])) for every head j of an [nb x g] array
// (row b: one logit block's values), by thread j, the rows folded in ascending order. The values
// come through shared memory, FOLD_ROWS rows at a time, loaded by the whole block at once: one
// thread walking its column waited a memory latency per row (~0.4 us each; 33 rows at 128K made
// ~10 us of each softmax kernel, H200). Ends with the block synchronized.
template <typename T, typename Fold, typename Done>
__device__ __forceinline__ void fold_rows(const T* in, int nb, int g, T init, Fold fold, Done done) {
  __shared__ T stage[FOLD_ROWS * SOFTMAX_HEADS];
  for (int j0 = 0; j0 < g; j0 += SOFTMAX_HEADS) {
    const int gj = min(SOFTMAX_HEADS, g - j0);
    T acc = init;
    for (int b0 = 0; b0 < nb; b0 += FOLD_ROWS) {
      const int nr = min(FOLD_ROWS, nb - b0);
      for (int i = threadIdx.x; i < nr * gj; i += blockDim.x) stage[i] = in[(size_t)(b0 + i / gj) * g + j0 + i % gj];
      __syncthreads();
      if (threadIdx.x < gj)
        for (int b = 0; b < nr; b++) acc = fold(acc, stage[b * gj + threadIdx.x]);
      __syncthreads();
    }
    if (threadIdx.x < gj) done(j0 + threadIdx.x, acc);
  }
  __syncthreads();
}

// Each head's max logit from the per-block maxima of landmark_logits: maxes [nb x g] -> mx [g]
// (shared). Ends with the block synchronized.
__device__ __forceinline__ void softmax_max(const float* maxes, int nb, int g, float* mx) {
  fold_rows(maxes, nb, g, -INFINITY, [](float m, float x) { return x > m ? x : m; }, [&](int j, float m) { mx[j] = m; });
}

// sums[j] = sum over c in [c0, c1) of exp(logits[j*ld + c] - mx[j]) for every head (float64: the
// terms may be 100K), all heads in one pass; sums in shared or global memory. With KEEP each term
// replaces its logit (the thread that read it writes it), for chunk_scores<true>. red_d: shared
// [32 * SOFTMAX_HEADS]. Ends with the block synchronized.
template <bool KEEP = false>
__device__ __forceinline__ void softmax_sums(std::conditional_t<KEEP, float*, const float*> logits, int64_t ld, int g, int64_t c0,
                                             int64_t c1, const float* mx, double* sums, double* red_d) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int j0 = 0; j0 < g; j0 += SOFTMAX_HEADS) {
    const int gj = min(SOFTMAX_HEADS, g - j0);
    double sum[SOFTMAX_HEADS] = {};
    // NOTE: the logits of SUMS_UNROLL steps are all requested (unconditionally, at clamped
    // addresses) before any is used: loaded beside their uses, each waited a memory latency (the
    // loop is latency-bound). Each head's sum still adds its terms in ascending c.
    for (int64_t cb = c0 + threadIdx.x; cb < c1; cb += (int64_t)SUMS_UNROLL * blockDim.x) {
      float x[SUMS_UNROLL][SOFTMAX_HEADS];
#pragma unroll
      for (int u = 0; u < SUMS_UNROLL; u++) {
        const int64_t c = cb + (int64_t)u * blockDim.x, cc = c < c1 ? c : cb;
#pragma unroll
        for (int j = 0; j < SOFTMAX_HEADS; j++) x[u][j] = logits[(size_t)(j0 + (j < gj ? j : 0)) * ld + cc];
      }
#pragma unroll
      for (int u = 0; u < SUMS_UNROLL; u++)
#pragma unroll
        for (int j = 0; j < SOFTMAX_HEADS; j++)
          if (j < gj && cb + (int64_t)u * blockDim.x < c1) {
            const float e = skv_exp(x[u][j] - mx[j0 + j]);
            sum[j] += e;
            if constexpr (KEEP) logits[(size_t)(j0 + j) * ld + cb + (int64_t)u * blockDim.x] = e;
          }
    }
#pragma unroll
    for (int j = 0; j < SOFTMAX_HEADS; j++) {
      const double v = warp_sum(sum[j]);
      if (lane == 0) red_d[warp * SOFTMAX_HEADS + j] = v;
    }
    __syncthreads();
    if (threadIdx.x < gj) {
      double total = 0;
      for (int w = 0; w < warps; w++) total += red_d[w * SOFTMAX_HEADS + threadIdx.x];
      sums[j0 + threadIdx.x] = total;
    }
    __syncthreads();
  }
}

// A head's 1 / sum of exp(logit - max), or 0 where its f32 softmax failed: a max or a sum that is not
// finite, from finite queries and landmarks past f32 (scale q·L beyond FLT_MAX gives +-Infinity, or
// NaN where products of +-Infinity meet; skv_exp keeps the NaN). A head that stands sums at least its
// max's term 1 and at most n terms, so 0 marks only failed heads: chunk_scores' terms times 0 leave
// them out, and redo_failed_heads scores them in float64.
__device__ __forceinline__ float head_inverse(float mx, double sum) {
  return isfinite(mx) && isfinite(sum) ? (float)(1.0 / sum) : 0.f;
}

// inv[j] = head_inverse of sum_c exp(logits[j*ld + c] - mx[j]) over [0, n) for every head, by one
// block. sums: shared [g] doubles. Ends with the block synchronized.
__device__ __forceinline__ void softmax_inv(const float* logits, int64_t ld, int g, int n, const float* mx, float* inv,
                                            double* sums, double* red_d) {
  softmax_sums(logits, ld, g, 0, n, mx, sums, red_d);
  for (int j = threadIdx.x; j < g; j += blockDim.x) inv[j] = head_inverse(mx[j], sums[j]);
  __syncthreads();
}

// scores[c] = the best probability any of the g heads gives chunk c (0 if every head gives NaN),
// for c in [0, n), by the block: SCORE_BATCH chunks per thread, each chunk's logits of
// SOFTMAX_HEADS heads at a time requested together (clamped rows and chunks) before any is used.
// EXPS: the logits are softmax_sums<true>'s terms exp(logit - mx), the same floats.
template <bool EXPS = false>
__device__ __forceinline__ void chunk_scores(const float* logits, int64_t ld, int g, int n, const float* mx,
                                             const float* inv, float* scores) {
  for (int c0 = threadIdx.x; c0 < n; c0 += SCORE_BATCH * blockDim.x) {
    float s[SCORE_BATCH] = {};
    for (int j0 = 0; j0 < g; j0 += SOFTMAX_HEADS) {
      float x[SCORE_BATCH][SOFTMAX_HEADS];
#pragma unroll
      for (int b = 0; b < SCORE_BATCH; b++) {
        const int c = c0 + b * blockDim.x, cc = c < n ? c : c0;
#pragma unroll
        for (int j = 0; j < SOFTMAX_HEADS; j++) x[b][j] = logits[(size_t)min(j0 + j, g - 1) * ld + cc];
      }
#pragma unroll
      for (int b = 0; b < SCORE_BATCH; b++)
#pragma unroll
        for (int j = 0; j < SOFTMAX_HEADS; j++)
          if (j0 + j < g) {
            const float p = (EXPS ? x[b][j] : skv_exp(x[b][j] - mx[j0 + j])) * inv[j0 + j];
            s[b] = p > s[b] ? p : s[b];
          }
    }
#pragma unroll
    for (int b = 0; b < SCORE_BATCH; b++)
      if (c0 + b * blockDim.x < n) scores[c0 + b * blockDim.x] = s[b];
  }
}

// One failed head's float64 softmax, after runtime/wasm/score_chunks.cc (probabilities_f64): logits
// scale q·L in float64 (|q·L| <= d FLT_MAX^2 fits) over all n landmarks [n x d] (dtype), q [d] f32;
// scores[c - c0] = max(scores[c - c0], p_c) for c in [c0, c1). By the whole block (a multiple of 32
// threads), one landmark a thread; each block that holds a slice of the scores takes the head's max
// and sum itself. NOTE: slow (two passes over the landmarks in float64), which only inputs no model
// produces pay; inlined (a call cost the select cluster 92-99 registers where it has 64).
__device__ __forceinline__ void head_scores_f64(const float* q, int d, float scale, const void* landmarks, int dtype, int64_t n,
                                             int64_t c0, int64_t c1, float* scores) {
  __shared__ double red[32];
  auto logit = [&](int64_t c) {
    double acc = 0.0;
#pragma unroll 1
    for (int e = 0; e < d; e++) acc = fma((double)q[e], (double)load_f32(landmarks, dtype, (size_t)c * d + e), acc);
    return __dmul_rn((double)scale, acc);  // NOTE: not contracted into `logit - mx` (attend_f64.cuh says why)
  };
  double mx = -INFINITY, sum = 0.0;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
    const double x = logit(c);
    mx = x > mx ? x : mx;
  }
  mx = block_fold(mx, [](double m, double x) { return x > m ? x : m; }, red);
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) sum += exp(logit(c) - mx);
  sum = block_fold(sum, [](double t, double x) { return t + x; }, red);
  for (int64_t c = c0 + threadIdx.x; c < c1; c += blockDim.x) {
    const float p = (float)(exp(logit(c) - mx) / sum);
    scores[c - c0] = p > scores[c - c0] ? p : scores[c - c0];
  }
  __syncthreads();
}

// After chunk_scores over [c0, c1) of n landmarks: each head whose f32 softmax failed (inv[j] == 0,
// head_inverse) scored in float64 into scores[c - c0]. q: the g heads' queries [g x d] (f32). By the
// whole block; the heads that stand cost one look at inv.
__device__ __forceinline__ void redo_failed_heads(const float* q, int g, int d, float scale, const void* landmarks, int dtype,
                                                  int64_t n, int64_t c0, int64_t c1, const float* inv, float* scores) {
  bool failed = false;
  for (int j = 0; j < g; j++) failed = failed || inv[j] == 0.f;
  if (!failed) return;
  __syncthreads();  // chunk_scores' scores are in
  for (int j = 0; j < g; j++)
    if (inv[j] == 0.f) head_scores_f64(q + (size_t)j * d, d, scale, landmarks, dtype, n, c0, c1, scores);
}

// ---- top-k ----

// The rank of a score as 32 bits, ascending = preferred first. -0 counts as +0 (they tie);
// every NaN maps to the largest value, where the index orders them.
__device__ __forceinline__ uint32_t score_rank(float s, int largest) {
  if (isnan(s)) return 0xffffffffu;
  uint32_t u = s == 0.f ? 0u : __float_as_uint(s);
  uint32_t mono = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // ascending with the float
  // NOTE: a non-NaN score never reaches 0xffffffff either way (that would be a NaN's bits).
  return largest ? ~mono : mono;
}

// Unique per index: (score rank << 32 | index), so the top k is one exact threshold.
__device__ __forceinline__ uint64_t rank_key(float score, int i, int largest) {
  return ((uint64_t)score_rank(score, largest) << 32) | (uint32_t)i;
}
__device__ __forceinline__ uint64_t select_key(const float* scores, int i, int largest) { return rank_key(scores[i], i, largest); }

enum { SELECT_CANDIDATES = 2048 };  // scores listed for the radix passes after the first, when they fit

struct SelectShared {
  uint32_t hist[RADIX];
  uint64_t prefix, mask;
  uint32_t want, under;  // under: scores under the prefix after the last pass
  int32_t scan[2][SELECT_THREADS / 32 + 1];  // compact_count's offsets, a row a list
  int32_t listed;
  int32_t cand[SELECT_CANDIDATES];
};

// Adds to hist, per bin (the 8 bits of a key at `shift`), the keys key(t) for t in [0, count)
// under the prefix pf of mask mk. Scores cluster in a few bins (the high bits are the exponent):
// lanes of a warp that share a bin add once, so the atomics do not serialize on one word.
template <typename Key>
__device__ __forceinline__ void radix_count(int count, Key key, uint64_t pf, uint64_t mk, int shift, uint32_t* hist) {
  for (int t0 = 0; t0 < count; t0 += blockDim.x) {  // NOTE: a uniform trip count, for the warp match
    const int t = t0 + threadIdx.x;
    uint32_t bin = RADIX;  // none
    if (t < count) {
      const uint64_t k = key(t);
      if ((k & mk) == pf) bin = (uint32_t)(k >> shift) & (RADIX - 1);
    }
    const unsigned peers = __match_any_sync(0xffffffffu, bin);
    if (bin < RADIX && threadIdx.x % 32 == __ffs(peers) - 1) atomicAdd(&hist[bin], (uint32_t)__popc(peers));
  }
}

// The bin of sh.hist (the pass at `shift`) that holds the want-th key narrows sh's prefix, by the
// first warp: RADIX / 32 bins per lane, a scan of the lanes' totals, then the lane whose bins reach
// `want` walks them. Once every key under the prefix is chosen, want is 0 and the prefix is the
// threshold (the prefix's last key).
__device__ __forceinline__ void radix_pick(int shift, SelectShared& sh) {
  if (threadIdx.x >= 32) return;
  enum { PER = RADIX / 32 };
  const int lane = threadIdx.x;
  uint32_t mine = 0;
#pragma unroll
  for (int b = 0; b < PER; b++) mine += sh.hist[lane * PER + b];
  uint32_t incl = mine;
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  const uint32_t want = sh.want;
  const unsigned reach = __ballot_sync(0xffffffffu, incl >= want);
  if (lane != __ffs(reach) - 1) return;
  uint32_t below = incl - mine;
  for (int b = lane * PER;; b++) {
    if (below + sh.hist[b] >= want) {
      sh.prefix |= (uint64_t)b << shift;
      sh.mask |= (uint64_t)(RADIX - 1) << shift;
      sh.want = want - below;
      sh.under = sh.hist[b];
      if (sh.hist[b] == sh.want) {
        sh.prefix |= ((uint64_t)1 << shift) - 1;
        sh.want = 0;
      }
      return;
    }
    below += sh.hist[b];
  }
}

// The m-th smallest key of scores[0, n) (0 < m < n), by an exact radix select 8 bits at a time.
// Index i is chosen iff select_key(scores, i) <= the result (exactly m of them). The first pass
// reads every score; the scores under its prefix are then listed (when at most SELECT_CANDIDATES)
// and the later passes read only them. NOTE: every pass over 16K scores took ~4 us (H200, 128K
// context, one block per kv head), and the first leaves a few hundred under the prefix.
__device__ __forceinline__ uint64_t select_threshold(const float* scores, int n, int m, int largest, SelectShared& sh) {
  if (threadIdx.x == 0) {
    sh.prefix = 0;
    sh.mask = 0;
    sh.want = (uint32_t)m;
  }
  __syncthreads();
  bool listed = false;  // the same in every thread
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < RADIX; b += blockDim.x) sh.hist[b] = 0;
    __syncthreads();
    if (listed) radix_count(sh.listed, [&](int t) { return select_key(scores, sh.cand[t], largest); }, sh.prefix, sh.mask, shift, sh.hist);
    else radix_count(n, [&](int t) { return select_key(scores, t, largest); }, sh.prefix, sh.mask, shift, sh.hist);
    __syncthreads();
    radix_pick(shift, sh);
    __syncthreads();
    if (sh.want == 0) break;  // NOTE: the same value in every thread (read after the barrier)
    if (!listed && shift > 0 && sh.under <= SELECT_CANDIDATES) {
      // The scores under the new prefix, in any order (the histograms do not depend on it).
      if (threadIdx.x == 0) sh.listed = 0;
      __syncthreads();
      const uint64_t npf = sh.prefix, nmk = sh.mask;
      const unsigned below = (1u << (threadIdx.x % 32)) - 1;
      for (int i0 = 0; i0 < n; i0 += blockDim.x) {  // NOTE: a uniform trip count, for the ballot
        const int i = i0 + threadIdx.x;
        const bool in = i < n && (select_key(scores, i, largest) & nmk) == npf;
        const unsigned b = __ballot_sync(0xffffffffu, in);
        int at = 0;
        if (threadIdx.x % 32 == 0 && b) at = atomicAdd(&sh.listed, __popc(b));
        at = __shfl_sync(0xffffffffu, at, 0);
        if (in) sh.cand[at + __popc(b & below)] = i;
      }
      __syncthreads();
      listed = true;
    }
  }
  return sh.prefix;
}

// ---- ordered compaction ----

// Ordered compaction into LISTS (1 or 2) lists at once: every i in [0, n) with keep(i, l) goes to
// list l, in ascending i (out[l][k] = value(i)). Each warp takes one contiguous range and walks it
// 32 elements at a time (lane i reads element i: no shared-memory bank conflicts), placing its kept
// elements by ballot; one scan over the warps' counts orders the ranges (warp l scans list l's).
// In two halves, so that a cluster can exchange its blocks' totals between them: compact_count
// leaves each warp's offsets in sh.scan and returns each list's total to every thread,
// compact_place writes the lists. NOTE: the reuse's two lists (free slots, misses) in one pass, and
// a cluster's per-block counts from compact_count rather than a __syncthreads_count pass before the
// compaction, took 1-2 us off StepScoreSelect: queued step 1 x 128K 0.109 -> 0.107 ms, 4 x 128K
// 0.273 -> 0.271 (H100, three rounds side by side, bench/NOTES.md v60).
__device__ __forceinline__ int compact_range(int n, int* lo, int* hi) {
  const int warps = blockDim.x / 32, span = (n + warps * 32 - 1) / (warps * 32) * 32;
  *lo = min(n, (int)(threadIdx.x / 32) * span);
  *hi = min(n, *lo + span);
  return warps;
}
template <int LISTS, typename Keep>
__device__ __forceinline__ void compact_count(int n, Keep keep, int* totals, SelectShared& sh) {
  static_assert(LISTS == 1 || LISTS == 2, "one or two lists");
  int lo, hi;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = compact_range(n, &lo, &hi);
  int mine[LISTS] = {};  // the warp's counts, the same in every lane
  for (int i0 = lo; i0 < hi; i0 += 32)
    for (int l = 0; l < LISTS; l++) mine[l] += __popc(__ballot_sync(0xffffffffu, i0 + lane < hi && keep(i0 + lane, l)));
  if (lane == 0)
    for (int l = 0; l < LISTS; l++) sh.scan[l][warp] = mine[l];
  __syncthreads();
  if (warp < LISTS) {  // list `warp`'s counts to exclusive offsets (blockDim.x <= 1024: one lane each)
    int32_t* scan = sh.scan[warp];
    const int t = lane < warps ? scan[lane] : 0;
    int run = t;
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, run, o);
      if (lane >= o) run += v;
    }
    if (lane < warps) scan[lane] = run - t;
    if (lane == warps - 1) scan[warps] = run;
  }
  __syncthreads();
  for (int l = 0; l < LISTS; l++) totals[l] = sh.scan[l][warps];
}
template <int LISTS, typename Keep, typename Value>
__device__ __forceinline__ void compact_place(int n, Keep keep, Value value, int32_t* const* out, SelectShared& sh) {
  int lo, hi;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  compact_range(n, &lo, &hi);
  const unsigned below = (1u << lane) - 1;
  int at[LISTS];
  for (int l = 0; l < LISTS; l++) at[l] = sh.scan[l][warp];
  for (int i0 = lo; i0 < hi; i0 += 32) {
    const int i = i0 + lane;
    for (int l = 0; l < LISTS; l++) {
      const bool k = i < hi && keep(i, l);
      const unsigned b = __ballot_sync(0xffffffffu, k);
      if (k) out[l][at[l] + __popc(b & below)] = value(i);
      at[l] += __popc(b);
    }
  }
  __syncthreads();  // sh.scan is free again
}
// One list: returns its count to every thread.
template <typename Keep, typename Value>
__device__ __forceinline__ int compact_ordered(int n, Keep keep, Value value, int32_t* out, SelectShared& sh) {
  auto one = [&](int i, int) { return keep(i); };
  int total;
  compact_count<1>(n, one, &total, sh);
  compact_place<1>(n, one, value, &out, sh);
  return total;
}

// The top m = min(k, n) indices of scores[0, n), ascending, into out (better score first, ties to
// the lower index, NaN after every number). Returns m.
__device__ __forceinline__ int select_top(const float* scores, int n, int k, int largest, int32_t* out, SelectShared& sh) {
  const int m = k < n ? k : n;
  if (m <= 0) return 0;
  const uint64_t kth = m < n ? select_threshold(scores, n, m, largest, sh) : ~0ull;
  return compact_ordered(
      n, [&](int i) { return select_key(scores, i, largest) <= kth; }, [](int i) { return i; }, out, sh);
}

// Blocks of a selecting cluster: 16, past the portable 8, where the kernel's launch opts in (Hopper
// runs clusters of 16); radix passes.
enum { SELECT_CLUSTER_MAX = 16, SELECT_CLUSTER_PORTABLE = 8, SELECT_PASSES = 8 };
#if defined(_CG_HAS_CLUSTER_GROUP)

// select_top over a thread block cluster (sm_90+): block b of the cluster holds scores[c0 + t] of
// the cluster's [0, total) for t in [0, n) (contiguous slices, ascending in b), and the top
// min(k, total) indices of them go, ascending, to out (the first block's shared memory, through
// the cluster's window) as value(i). Each radix pass counts every slice into its block's
// histogram, adds the histograms into the first block's hists[pass] (SELECT_PASSES x RADIX, zeroed
// by the caller before a cluster barrier), and every block picks the same bin from the sums.
// Then each block places its chosen indices after those of the blocks before it. Returns the
// count to every thread of every block, with the cluster synchronized (out is whole).
// counts: shared [SELECT_CLUSTER_MAX]. The same indices as select_top over all the scores.
template <typename Value>
__device__ __forceinline__ int cluster_select_top(cooperative_groups::cluster_group& cl, const float* scores, int c0, int n,
                                                  int total, int k, int largest, uint32_t* hists, int32_t* counts,
                                                  int32_t* out, Value value, SelectShared& sh) {
  const int m = k < total ? k : total;
  if (m <= 0) return 0;
  auto key = [&](int t) { return rank_key(scores[t], c0 + t, largest); };
  uint64_t kth = ~0ull;
  if (m < total) {
    if (threadIdx.x == 0) {
      sh.prefix = 0;
      sh.mask = 0;
      sh.want = (uint32_t)m;
    }
    for (int shift = 56, pass = 0; shift >= 0; shift -= 8, pass++) {
      for (int b = threadIdx.x; b < RADIX; b += blockDim.x) sh.hist[b] = 0;
      __syncthreads();
      radix_count(n, key, sh.prefix, sh.mask, shift, sh.hist);
      __syncthreads();
      uint32_t* sum = cl.map_shared_rank(hists + pass * RADIX, 0);
      for (int b = threadIdx.x; b < RADIX; b += blockDim.x)
        if (sh.hist[b]) atomicAdd(&sum[b], sh.hist[b]);
      cl.sync();
      for (int b = threadIdx.x; b < RADIX; b += blockDim.x) sh.hist[b] = sum[b];
      __syncthreads();
      radix_pick(shift, sh);
      __syncthreads();
      if (sh.want == 0) break;  // NOTE: the same in every block (the same sums)
    }
    kth = sh.prefix;
  }
  // The slice's chosen indices counted, the counts exchanged, then placed after the blocks' before.
  auto chosen = [&](int t, int) { return key(t) <= kth; };
  int mine;
  compact_count<1>(n, chosen, &mine, sh);
  const int rank = (int)cl.block_rank(), blocks = (int)cl.num_blocks();
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) cl.map_shared_rank(counts, b)[rank] = mine;
  cl.sync();
  int at = 0;
  for (int b = 0; b < rank; b++) at += counts[b];
  int32_t* dst = out + at;
  compact_place<1>(n, chosen, [&](int t) { return value(c0 + t); }, &dst, sh);
  cl.sync();
  return m;
}
#endif
