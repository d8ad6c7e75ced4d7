// One decode step of one layer, every batch row, as a few kernels on one stream and no host
// synchronization: the CUDA twin of runtime/wasm/decode_layer.cc. Each kernel covers all rows and
// kv heads of the step (a "task" is one (row, kv head)):
//   1. StepAppend: q, k to f32 with RoPE, k and v appended to the tail; attention tasks set up.
//   2. StepLogits + 3. StepScoreSelect: landmark logits, softmax scores (max over the GQA group),
//      the exact top max_selected, and the slot reuse of the last step's selection (hits keep their
//      slot, misses take the free slots in order) - on the device, per task, by a thread block
//      cluster (sm_90+; elsewhere StepSoftmaxSums, StepScores, then StepSelect in one block a task).
//   4. StepFetch: per group of misses, the values by a zero-copy gather from pinned host memory
//      (or a device copy from the hot-value cache, where the select found them there), issued
//      first so that PCIe runs while the same block rebuilds the keys (U . SVh with RoPE).
//   5. Attention (sparse_attention.cu): split-K flash decode over outliers, selected, tail.
//   Then, for rows that compact: CompactKeys (U rows of the new tokens), CompactChunks (values to
//   the host pages, landmarks appended), CompactTail (the tail shifted, landmark counts raised).
// The per-op kernels share their device code (score.cuh, select.cuh, rebuild_keys.cuh,
// landmarks.cuh, attention.h), so decodeLayerComposed over the ops gives the same bits.
#include <limits.h>
#include <string.h>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>
#include "attention.h"
#include "fp8.cuh"
#include "pack.cuh"
#include "landmarks.cuh"
#include "rebuild_keys.cuh"
#include "rope.cuh"
#include "score.cuh"
#include "select.cuh"
#include "step_token.cuh"

namespace {

// The select's per-slot lists (ids, held, hit, free_slots, miss_idx: S each) and its shared memory bounds.
enum { SELECT_LISTS = 5, SELECT_LISTS_SMEM_MAX = 48 * 1024, SELECT_SMEM_MAX = 160 * 1024 };

// Where each temporary lives in the workspace (byte offsets), from host-known bounds. NOTE: no
// implicit padding here or in StepArgs (the pads are members, zeroed by {}): a step's launches are
// replayed from a graph only when these bytes and the plan's are all equal (StepGraphs).
struct StepLayout {
  size_t qf, logits, maxes, sums, scores, lists, miss_ids, miss_slots, hot_codes, n_miss, landed, attn, segs, part,
      arrivals, bytes;
  int tasks, sparse, max_l, max_splits, max_m;  // sparse: compressed active rows; max_m: chunks the largest compaction moves
  cudaError_t error;                             // of the device query that sized the attention's splits (DecodeLayer returns it)
  bool lists_shared, scores_shared;              // the select kernel keeps a head's slot lists / scores in shared memory
  char pad[6];
};
static_assert(sizeof(StepLayout) == 16 * 8 + 6 * 4 + 8, "StepLayout has no implicit padding");

struct StepArgs {
  SkvStep s;               // its q, k, v and out zero: the kernels read io's
  const SkvStepRow* rows;  // device copy
  const SkvStepIo* io;     // device copy
  char* ws;
  StepLayout at;
  bool rebuild_mma;  // every row's rebuild on the tensor cores (rebuild_mma)
  bool dense;        // a dense step (AttentionDense): StepAppend only counts the step and zeroes the arrivals
  char pad[6];
};
static_assert(sizeof(StepArgs) == sizeof(SkvStep) + 24 + sizeof(StepLayout) + 8, "StepArgs has no implicit padding");

template <typename T>
__device__ __forceinline__ T* ws_ptr(const StepArgs& a, size_t off) {
  return reinterpret_cast<T*>(a.ws + off);
}

__device__ __forceinline__ void* elem(uint64_t base, int dtype, size_t i) {
  return reinterpret_cast<char*>(base) + i * skv_dtype_size(dtype);
}

__device__ __forceinline__ int32_t* head_counts(const SkvStepRow& r, int h) {
  return reinterpret_cast<int32_t*>(r.head_counts) + h * SKV_HEAD_FIELDS;
}

__device__ __forceinline__ int32_t* landmark_bound(const SkvStepRow& r, int h, int kv_heads) {
  return landmark_bound_word(reinterpret_cast<int32_t*>(r.head_counts), kv_heads, h);
}

// A running total and its per-step twin.
__device__ __forceinline__ void tally(double* counters, int total, int last, double n) {
  atomicAdd(&counters[total], n);
  atomicAdd(&counters[last], n);
}

__device__ __forceinline__ int compacted_chunks(const SkvStep& s, const SkvStepRow& r) {
  const int m = (r.tail_count + 1 - s.local_tokens) / s.C;
  return r.compact && r.u && r.input >= 0 && m > 0 ? m : 0;
}

// ---- 1. append ----

enum { APPEND_THREADS = 512 };

// StepAppend's dynamic shared memory: the token's q and k rows and the rotation's (cos, sin) pairs.
size_t append_smem(int q_heads, int kv_heads, int d) { return sizeof(float) * ((size_t)(q_heads + kv_heads) * d + d); }

// The step's counters: its per-step twins zeroed, the step counted. One thread of the step.
__device__ __forceinline__ void count_step(const StepArgs& a) {
  double* c = reinterpret_cast<double*>(a.s.counters);
  for (int i = SKV_LAST_HITS_COUNTER; i < SKV_COUNTERS; i++) c[i] = 0;
  c[SKV_STEPS_COUNTER] += 1;
}

// Row b's append, by a whole block (any size): its kv heads' attention tasks and arrival counts,
// then q and k to f32 with RoPE, q to the workspace, k and v to the tail. qk: shared
// [append_smem floats]: [Hq x d] q, [Hkv x d] k, then [d/2] (cos, sin) pairs at the row's position.
__device__ __forceinline__ void append_row(const StepArgs& a, int b, float* qk) {
  const SkvStep& s = a.s;
  const SkvStepRow r = a.rows[b];
  const SkvStepIo io = *a.io;
  const int Hq = s.q_heads, Hkv = s.kv_heads, d = s.d, g = Hq / Hkv;
  SkvAttnTask* tasks = ws_ptr<SkvAttnTask>(a, a.at.attn) + (size_t)b * Hkv;
  int32_t* arrivals = ws_ptr<int32_t>(a, a.at.arrivals) + (size_t)b * Hkv;  // the attention's (attention.h): zero at its launch
  // The fetch's landed counts and the miss counts they are compared with (StepFetch, Attention):
  // zero until the select and the fetch count this step's, so that a row without a store needs none.
  int32_t* landed = ws_ptr<int32_t>(a, a.at.landed) + (size_t)b * Hkv;
  int32_t* n_miss = ws_ptr<int32_t>(a, a.at.n_miss) + (size_t)b * Hkv;
  SkvSegment* segs = ws_ptr<SkvSegment>(a, a.at.segs) + (size_t)b * Hkv * 3;
  float* qf = ws_ptr<float>(a, a.at.qf) + (size_t)b * Hq * d;
  for (int h = threadIdx.x; h < Hkv; h += blockDim.x) {
    arrivals[h] = 0;
    if (a.dense) continue;  // the attention makes its own tasks
    landed[h] = n_miss[h] = 0;
    SkvAttnTask t{};
    if (r.input >= 0) {
      t = row_task(s, io, r, h);
      t.q = qf + (size_t)h * g * d;
      t.segs = segs + (size_t)h * 3;
      segs[(size_t)h * 3 + (r.u ? 2 : 0)] = tail_segment(s, r, h);  // with a store the select adds outliers and selected chunks
      if (!r.u) t.nseg = 1, t.total = r.tail_count + 1;
    }
    tasks[h] = t;
  }
  if (r.input < 0 || a.dense) return;
  float *kf = qk + (size_t)Hq * d, *cs = kf + (size_t)Hkv * d;
  token_rows(s, io, r, 0, Hq, 0, Hkv, qk, cs);
  for (int i = threadIdx.x; i < Hq * d; i += blockDim.x) qf[i] = qk[i];
  token_to_tail(s, io, r, 0, Hkv, kf);
}

__global__ void __launch_bounds__(APPEND_THREADS) StepAppendKernel(StepArgs a) {
  skv_pdl_enter();
  extern __shared__ float qk[];  // append_row's
  if (blockIdx.x == 0 && threadIdx.x == 0) count_step(a);
  if ((int)blockIdx.x < a.s.batch) append_row(a, blockIdx.x, qk);
}

// ---- 2. logits ----

__device__ __forceinline__ bool sparse_task(const StepArgs& a, int task, SkvStepRow* r) {
  if (task >= a.s.batch * a.s.kv_heads) return false;
  *r = a.rows[task / a.s.kv_heads];
  return r->input >= 0 && r->u;
}

// A task's query heads [g x d] (f32, rotated: the append's) and its kv head's landmarks.
__device__ __forceinline__ const float* task_queries(const StepArgs& a, int task) {
  const int g = a.s.q_heads / a.s.kv_heads;
  return ws_ptr<float>(a, a.at.qf) + ((size_t)(task / a.s.kv_heads) * a.s.q_heads + (size_t)(task % a.s.kv_heads) * g) * a.s.d;
}

__device__ __forceinline__ const void* task_landmarks(const StepArgs& a, const SkvStepRow& r, int task) {
  return elem(r.landmarks, a.s.kv_dtype, (size_t)(task % a.s.kv_heads) * r.chunk_capacity * a.s.d);
}

// Block (task, y) takes whole ranges of the task's logit_blocks (gridDim.y blocks share them).
// append_rows > 0 (the first row group, SHADOWKV_CUDA_APPEND_FOLD not 0): StepAppend is folded in.
// The last append_rows blocks of y 0 append those rows (append_row) and every other block rotates
// its task's query heads itself (token_rows, the same bits as the append's), requesting its first
// landmark tiles before, so that no kernel boundary separates the step's start from the landmark
// reads. Dynamic shared memory: LOGIT_SMEM, then with append_rows the rotated heads [g x d] and the
// (cos, sin) pairs [d] (append_row's rows take the stages' bytes). NOTE: the append alone was a
// one-block-a-row kernel of ~7 us at 1 x 128K (ncu, H200) on an otherwise idle card.
__global__ void __launch_bounds__(LOGIT_THREADS, 2) StepLogitsKernel(StepArgs a, int task0, int append_rows) {
  skv_pdl_enter();
  __shared__ float red[LOGIT_GROUPS * LOGIT_HEADS];
  extern __shared__ __align__(16) char stage[];
  const int tasks = (int)gridDim.x - append_rows;
  if ((int)blockIdx.x >= tasks) {
    const int b = (int)blockIdx.x - tasks;
    if (blockIdx.y != 0) return;
    if (b == 0 && threadIdx.x == 0) count_step(a);
    append_row(a, b, reinterpret_cast<float*>(stage));
    return;
  }
  SkvStepRow r;
  const int task = task0 + blockIdx.x;
  const SkvStepIo io = append_rows > 0 ? *a.io : SkvStepIo{};  // loaded beside the row (step_token.cuh)
  if (!sparse_task(a, task, &r)) return;
  const SkvStep& s = a.s;
  const int h = task % s.kv_heads, g = s.q_heads / s.kv_heads, d = s.d;
  const int L = head_counts(r, h)[SKV_HEAD_LANDMARKS], nb = logit_blocks(L);
  // The ranges spread evenly over the task's blocks. NOTE: the plan counts the capacity's ranges
  // (33 at 128K for the landmarks' 32); ceil(32 / 7) = 5 a block had given 4 x 128K six blocks of
  // 20 tiles a kv head and one of 8, where 8 blocks take 16 each (the plan's tie, now to more blocks).
  const int b0 = (int)((int64_t)blockIdx.y * nb / gridDim.y), b1 = (int)((int64_t)(blockIdx.y + 1) * nb / gridDim.y);
  if (b0 >= b1) return;
  const void* landmarks = task_landmarks(a, r, task);
  const float* q = task_queries(a, task);
  bool prefetched = false;
  if (append_rows > 0) {
    prefetched = landmark_logits_prefetch(landmarks, d, s.kv_dtype, L, nb, b0, b1, stage);
    float* x = reinterpret_cast<float*>(stage + LOGIT_SMEM);
    token_rows(s, io, r, h * g, g, 0, 0, x, x + (size_t)g * d);
    q = x;
  }
  float* logits = ws_ptr<float>(a, a.at.logits) + (size_t)task * g * a.at.max_l;
  float* maxes = ws_ptr<float>(a, a.at.maxes) + ((size_t)task * LOGIT_MAX_BLOCKS + b0) * g;
  // The head's landmark bound, not the scoring op's per-row check (logits_mma.cuh: what it cost here).
  const float bound = __int_as_float(*landmark_bound(r, h, s.kv_heads));
  landmark_logits<false>(q, g, d, s.score_scale, landmarks, s.kv_dtype, L, nb, b0, b1, logits, a.at.max_l, maxes, red, stage, prefetched, bound);
}

// Scores over the logit blocks' ranges, in two passes of tasks x ranges blocks: each range's softmax
// sums (StepSoftmaxSums), then each range's scores from the heads' totals (StepScores). The totals
// add the ranges in order, so they differ from score_chunks.cu's one-block sums only in the order
// of float64 additions, which the f32 inverse rounds away as it does between wasm and CUDA. NOTE:
// one block per task did both in ~25 us at 128K (16K landmarks, 8 SMs busy at batch 1); the
// scores alone in StepSelect's one block per task took ~14 us there (the exps of 16K x 4 logits
// on one SM), against ~8 over many blocks (H200).
enum { SCORE_THREADS = 256 };

// The task's row, its landmarks (L), this block's range of them and its heads' max logit (mx, shared
// [g]); false when the task is not sparse or the block is past its ranges.
__device__ __forceinline__ bool score_range(const StepArgs& a, int task, SkvStepRow* r, int* L, int* nb, int64_t* c0, int64_t* c1,
                                            float* mx) {
  if (!sparse_task(a, task, r)) return false;
  const int g = a.s.q_heads / a.s.kv_heads;
  *L = head_counts(*r, task % a.s.kv_heads)[SKV_HEAD_LANDMARKS];
  *nb = logit_blocks(*L);
  if ((int)blockIdx.y >= *nb) return false;
  logit_range(*L, blockIdx.y, *nb, c0, c1);
  softmax_max(ws_ptr<float>(a, a.at.maxes) + (size_t)task * LOGIT_MAX_BLOCKS * g, *nb, g, mx);
  return true;
}

__global__ void __launch_bounds__(SCORE_THREADS) StepSoftmaxSumsKernel(StepArgs a, int task0) {
  skv_pdl_enter();
  __shared__ double red_d[32 * SOFTMAX_HEADS];
  extern __shared__ float mx[];  // [g]
  SkvStepRow r;
  int L, nb;
  int64_t c0, c1;
  const int task = task0 + blockIdx.x, g = a.s.q_heads / a.s.kv_heads;
  if (!score_range(a, task, &r, &L, &nb, &c0, &c1, mx)) return;
  softmax_sums(ws_ptr<float>(a, a.at.logits) + (size_t)task * g * a.at.max_l, a.at.max_l, g, c0, c1, mx,
               ws_ptr<double>(a, a.at.sums) + ((size_t)task * LOGIT_MAX_BLOCKS + blockIdx.y) * g, red_d);
}

// NOTE: 6 blocks an SM as before the float64 redo of failed heads, whose double exp had taken the
// kernel from 40 to 54 registers (4 blocks); bounded, it keeps 40 and spills nothing (ptxas, sm_90).
__global__ void __launch_bounds__(SCORE_THREADS, 6) StepScoresKernel(StepArgs a, int task0) {
  skv_pdl_enter();
  extern __shared__ float stats[];  // [g] max logit, [g] inverse sum
  SkvStepRow r;
  int L, nb;
  int64_t c0, c1;
  const int task = task0 + blockIdx.x, g = a.s.q_heads / a.s.kv_heads;
  if (!score_range(a, task, &r, &L, &nb, &c0, &c1, stats)) return;
  const double* sums = ws_ptr<double>(a, a.at.sums) + (size_t)task * LOGIT_MAX_BLOCKS * g;
  fold_rows(sums, nb, g, 0.0, [](double t, double x) { return t + x; }, [&](int j, double t) { stats[g + j] = head_inverse(stats[j], t); });
  float* scores = ws_ptr<float>(a, a.at.scores) + (size_t)task * a.at.max_l + c0;
  chunk_scores(ws_ptr<float>(a, a.at.logits) + (size_t)task * g * a.at.max_l + c0, a.at.max_l, g, (int)(c1 - c0), stats,
               stats + g, scores);
  redo_failed_heads(task_queries(a, task), g, a.s.d, a.s.score_scale, task_landmarks(a, r, task), a.s.kv_dtype, L, c0, c1,
                    stats + g, scores);
}

// ---- 3. select and reuse ----

// The hot-value cache's part of the step for one task, by the whole block (reuse_slots.h
// hot_slots): miss k is chunk ids[miss_idx[k]] (ascending in k); held[i] == INT_MAX marks
// ids[i] a miss. Writes each miss's code (>= 0: copy from that slot; -1: fetch; <= -2: fetch,
// then keep in slot -2 - code) and updates the slots' ids; returns the hot hits (thread 0).
// A fetched miss claims its slot unless this step's hot hit sits there (read before any write);
// the claims clear the slot, then the largest id takes it (atomicMax), as the serial loop does.
__device__ int hot_slots(const SkvStepRow& r, int h, const int32_t* ids, int m, const int32_t* held, const int32_t* miss_idx,
                         int n, int32_t* codes) {
  __shared__ int hits;
  const int P = r.hot_slots;
  int32_t* hot = reinterpret_cast<int32_t*>(r.hot_ids) + (size_t)h * P;
  if (threadIdx.x == 0) hits = 0;
  __syncthreads();
  for (int k = threadIdx.x; k < n; k += blockDim.x) {
    const int32_t id = ids[miss_idx[k]], p = id % P, res = hot[p];
    int lo = 0, hi = m;  // lower_bound of res in ids: is the resident a miss of this step (a hot hit)?
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (ids[mid] < res) lo = mid + 1;
      else hi = mid;
    }
    const bool taken = lo < m && ids[lo] == res && held[lo] == INT_MAX;
    codes[k] = res == id ? p : taken ? -1 : -2 - p;
    if (res == id) atomicAdd(&hits, 1);
  }
  __syncthreads();
  for (int k = threadIdx.x; k < n; k += blockDim.x)
    if (codes[k] <= -2) hot[-2 - codes[k]] = -1;
  __syncthreads();
  for (int k = threadIdx.x; k < n; k += blockDim.x)
    if (codes[k] <= -2) atomicMax(&hot[-2 - codes[k]], ids[miss_idx[k]]);
  __syncthreads();
  for (int k = threadIdx.x; k < n; k += blockDim.x)
    if (codes[k] <= -2 && hot[-2 - codes[k]] != ids[miss_idx[k]]) codes[k] = -1;
  return hits;
}

// 4. Reuse (reuse_slots.h), by one block: ids[0, m) of lists (SELECT_LISTS x S: ids, held, hit,
// free_slots, miss_idx) hold the task's selected chunk ids, ascending. All slots are cleared if
// the selection shrank; a slot whose chunk stays selected is a hit (the first such slot, if two
// held the same chunk); misses take the other slots of [0, m) in order. Then the misses for
// StepFetch, the counters, and the attention's outlier and selected segments. held: what the
// caller read before the select: the head's slot ids (a copy may share miss_idx's list, which is
// written only after it is read), its outlier and selected counts, and the tail segment's rows
// (tail_segment's n, which the append stored); null: read here. NOTE: optional, because the
// one-block path (StepSelect) reading them in its caller went from 62 registers to 32 with 68-72
// bytes of spill (ptxas, sm_90), where StepScoreSelect reads them before its PDL wait anyway.
struct HeldSlots {
  const int32_t* ids;
  int outliers, selected, tail;
};
__device__ void select_reuse(const StepArgs& a, const SkvStepRow& r, int task, int32_t* lists, int m, SelectShared& sh,
                             const HeldSlots* held_in = nullptr) {
  const SkvStep& s = a.s;
  const int h = task % s.kv_heads, S = s.max_selected, C = s.C;
  int32_t* hc = head_counts(r, h);
  const int O = held_in ? held_in->outliers : hc[SKV_HEAD_OUTLIERS];
  int sc = held_in ? held_in->selected : hc[SKV_HEAD_SELECTED];
  const size_t o = (size_t)task * S;
  int32_t *ids = lists, *held = lists + S, *hit = lists + 2 * S, *free_slots = lists + 3 * S, *miss_idx = lists + 4 * S;
  int32_t* miss_ids = ws_ptr<int32_t>(a, a.at.miss_ids) + o;
  int32_t* miss_slots = ws_ptr<int32_t>(a, a.at.miss_slots) + o;
  int32_t* slot_ids = reinterpret_cast<int32_t*>(r.selected_ids) + (size_t)h * S;
  const int32_t* held_ids = held_in ? held_in->ids : slot_ids;
  if (m < sc) {
    for (int i = threadIdx.x; i < S; i += blockDim.x) slot_ids[i] = -1;
    sc = 0;
  }
  for (int i = threadIdx.x; i < m; i += blockDim.x) held[i] = INT_MAX;
  __syncthreads();
  for (int slot = threadIdx.x; slot < sc; slot += blockDim.x) {
    const int32_t id = held_ids[slot];
    int lo = 0, hi = m;  // lower_bound of id in ids
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (ids[mid] < id) lo = mid + 1;
      else hi = mid;
    }
    hit[slot] = lo < m && ids[lo] == id ? lo : -1;
    if (hit[slot] >= 0) atomicMin(&held[lo], slot);
  }
  __syncthreads();
  // The free slots (list 0: no hit kept it) and the misses (list 1: ids no slot holds), one pass.
  auto keep = [&](int i, int list) { return list == 0 ? !(i < sc && hit[i] >= 0 && held[hit[i]] == i) : held[i] == INT_MAX; };
  int totals[2];
  int32_t* const outs[2] = {free_slots, miss_idx};
  compact_count<2>(m, keep, totals, sh);
  compact_place<2>(m, keep, [](int i) { return i; }, outs, sh);
  const int n_free = totals[0];
  for (int k = threadIdx.x; k < n_free; k += blockDim.x) {
    const int32_t id = ids[miss_idx[k]], slot = free_slots[k];
    slot_ids[slot] = id;
    miss_ids[k] = id;
    miss_slots[k] = slot;
  }
  const int hot_hits = r.hot_slots > 0 ? hot_slots(r, h, ids, m, held, miss_idx, n_free, ws_ptr<int32_t>(a, a.at.hot_codes) + o) : 0;
  if (threadIdx.x == 0) {
    hc[SKV_HEAD_SELECTED] = m;
    ws_ptr<int32_t>(a, a.at.n_miss)[task] = n_free;
    double* c = reinterpret_cast<double*>(s.counters);
    tally(c, SKV_HITS_COUNTER, SKV_LAST_HITS_COUNTER, m - n_free);
    tally(c, SKV_MISSES_COUNTER, SKV_LAST_MISSES_COUNTER, n_free);
    tally(c, SKV_HOT_HITS_COUNTER, SKV_LAST_HOT_HITS_COUNTER, hot_hits);
    tally(c, SKV_SELECTED_TOKENS_COUNTER, SKV_LAST_SELECTED_TOKENS_COUNTER, (double)m * C);
    // 5's segments: outliers, selected, then the tail (set by StepAppend).
    const size_t block = (size_t)C * s.d;
    SkvSegment* segs = ws_ptr<SkvSegment>(a, a.at.segs) + (size_t)task * 3;
    const size_t oo = (size_t)h * s.max_outliers * block, so = (size_t)h * S * block;
    segs[0] = SkvSegment{reinterpret_cast<uint64_t>(elem(r.outlier_k, s.kv_dtype, oo)),
                         reinterpret_cast<uint64_t>(elem(r.outlier_v, s.kv_dtype, oo)), O * C, s.d};
    segs[1] = SkvSegment{reinterpret_cast<uint64_t>(elem(r.selected_k, s.kv_dtype, so)),
                         reinterpret_cast<uint64_t>(elem(r.selected_v, s.kv_dtype, so)), m * C, s.d};
    SkvAttnTask* t = ws_ptr<SkvAttnTask>(a, a.at.attn) + task;
    t->nseg = 3;
    t->total = (int64_t)(O + m) * C + (held_in ? held_in->tail : segs[2].n);
  }
}

// One block per task, after StepSoftmaxSums and StepScores (devices without clusters, and
// SkvStep.select_blocks 1).
__global__ void __launch_bounds__(SELECT_THREADS) StepSelectKernel(StepArgs a, int task0) {
  skv_pdl_enter();
  __shared__ SelectShared sh;
  extern __shared__ float smem[];  // the per-slot lists, then [L] scores, each where it fits
  SkvStepRow r;
  const int task = task0 + blockIdx.x;
  if (!sparse_task(a, task, &r)) return;
  const SkvStep& s = a.s;
  const int h = task % s.kv_heads, S = s.max_selected;
  const int L = head_counts(r, h)[SKV_HEAD_LANDMARKS];
  // The per-slot lists in shared memory where they fit (their steps are chains of dependent reads).
  int32_t* lists = a.at.lists_shared ? reinterpret_cast<int32_t*>(smem) : ws_ptr<int32_t>(a, a.at.lists) + (size_t)task * S * SELECT_LISTS;
  // 2. The scores (StepScores), into shared memory where they fit: the radix passes read them several times.
  float* scores = ws_ptr<float>(a, a.at.scores) + (size_t)task * a.at.max_l;
  if (a.at.scores_shared) {
    float* near = smem + (a.at.lists_shared ? SELECT_LISTS * S : 0);
    batched<16>(L, [&](int c) { return scores[c]; }, [&](int c, float x) { near[c] = x; });
    scores = near;
    __syncthreads();
  }
  // 3. The top chunks, ascending, as chunk ids.
  const int m = select_top(scores, L, S, 1, lists, sh);
  const int32_t* lid = reinterpret_cast<const int32_t*>(r.landmark_ids) + (size_t)h * r.chunk_capacity;
  for (int i = threadIdx.x; i < m; i += blockDim.x) lists[i] = lid[lists[i]];
  select_reuse(a, r, task, lists, m, sh);
}

// 2-3 in one kernel on sm_90+: a cluster of blocks per task, block b of them taking a contiguous
// slice of the landmarks. Each block sums its slice's softmax terms (every block then adds the
// slices' sums in order: float64, as StepScores adds its ranges'), scores its slice into shared
// memory, and the cluster selects over the slices (cluster_select_top) into the first block's
// lists, which then does the reuse. NOTE: the three kernels of the one-block path took 6.6 + 7.0
// + 30.5 us at 1 x 128K, the select's radix passes on 8 SMs (H200).
// SELECT_CLUSTER_MIN: the smallest cluster the default takes (of 2, batch 16 at 128K took 104 us
// against the one-block path's 98, H200).
enum { SELECT_CLUSTER_THREADS = 512, SELECT_CLUSTER_MIN = 4 };

// Dynamic shared memory of StepScoreSelect: the slices' sums [blocks x g] (f64), max logits and
// inverse sums [g] each, the logit blocks' maxima [LOGIT_MAX_BLOCKS x g], the per-slot lists, the
// slice's scores; with `near`, then the slice's logits [g x span] and landmark ids [span].
size_t score_select_smem(int blocks, int g, int S, int span, bool near) {
  return sizeof(double) * (size_t)blocks * g + sizeof(float) * (2 + LOGIT_MAX_BLOCKS) * (size_t)g +
         sizeof(int32_t) * SELECT_LISTS * (size_t)S + sizeof(float) * (size_t)span +
         (near ? (sizeof(float) * g + sizeof(int32_t)) * (size_t)span : 0);
}

template <bool NEAR>
__global__ void __launch_bounds__(SELECT_CLUSTER_THREADS) StepScoreSelectKernel(StepArgs a, int task0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cooperative_groups::cluster_group cl = cooperative_groups::this_cluster();
  __shared__ SelectShared sh;
  __shared__ double red_d[32 * SOFTMAX_HEADS];
  __shared__ uint32_t hists[SELECT_PASSES * RADIX];  // the first block's: the cluster's histogram of each pass
  __shared__ int32_t counts[SELECT_CLUSTER_MAX];
  extern __shared__ __align__(16) char dyn[];
  SkvStepRow r;
  const int task = task0 + blockIdx.x;
  // NOTE: what no kernel of this step writes before the select (the row, its head's counts, the
  // last step's slot ids) is read before the PDL wait, beside the logits' tail: at 1 x 128K the
  // row, then the counts, then the logits' maxima were a chain of three L2 round trips after it,
  // ~3.4 us of the kernel's ~22, and the reuse at its end read the counts and slot ids again (H100,
  // bench/NOTES.md v59). Nothing is written before the wait.
  if (!sparse_task(a, task, &r)) {  // NOTE: the whole cluster (one task) returns
    // Still after the wait: a launch whose every block left without it could end before the logits
    // (and the append folded into them), and the kernels after it wait only for this one.
    skv_pdl_enter();
    return;
  }
  // NOTE: a block's shared memory may be written by the others only once it runs: every block
  // arrives here and waits before its first remote write.
  auto started = cl.barrier_arrive();
  const SkvStep& s = a.s;
  const int g = s.q_heads / s.kv_heads, h = task % s.kv_heads, S = s.max_selected;
  const int blocks = (int)cl.num_blocks(), rank = (int)cl.block_rank();
  const int32_t* hc = head_counts(r, h);
  const int L = hc[SKV_HEAD_LANDMARKS], O = hc[SKV_HEAD_OUTLIERS], sc = hc[SKV_HEAD_SELECTED], nb = logit_blocks(L);
  const int span = (L + blocks - 1) / blocks, c0 = min(L, rank * span), n = min(L, c0 + span) - c0;
  double* parts = reinterpret_cast<double*>(dyn);
  float *mx = reinterpret_cast<float*>(parts + (size_t)blocks * g), *inv = mx + g, *maxes = inv + g;
  int32_t* lists = reinterpret_cast<int32_t*>(maxes + (size_t)LOGIT_MAX_BLOCKS * g);
  float* scores = reinterpret_cast<float*>(lists + (size_t)SELECT_LISTS * S);
  const float* logits = ws_ptr<float>(a, a.at.logits) + (size_t)task * g * a.at.max_l + c0;  // the slice's, head j's at [j * ld]
  const int64_t ld = a.at.max_l;
  float* nl = scores + span;  // NEAR: the slice's logits [g x span], then their softmax terms
  const int32_t* lid = reinterpret_cast<const int32_t*>(r.landmark_ids) + (size_t)h * r.chunk_capacity + c0;
  int32_t* held_ids = lists + (size_t)(SELECT_LISTS - 1) * S;  // the first block's copy, in miss_idx's list (select_reuse)
  if (rank == 0)
    for (int i = threadIdx.x; i < sc; i += blockDim.x) skv_mma::cp_async4(held_ids + i, reinterpret_cast<const int32_t*>(r.selected_ids) + (size_t)h * S + i);
  skv_pdl_enter();
  // The logit blocks' maxima, then the slice's logits and landmark ids (NEAR), each a group.
  const float* block_max = ws_ptr<float>(a, a.at.maxes) + (size_t)task * LOGIT_MAX_BLOCKS * g;
  for (int i = threadIdx.x; i < nb * g; i += blockDim.x) skv_mma::cp_async4(maxes + i, block_max + i);
  skv_mma::cp_async_commit();
  if constexpr (NEAR) {
    // The slice's logits and landmark ids, requested before the maxima fold and landed by the
    // sums: the sums, the scores and the compaction then read shared memory. NOTE: from L2 each of
    // the three waited a load latency a step of its loop (1 x 128K, clock64 trace, bench/NOTES.md
    // v35: sums 3.2, scores 2.6, compaction 3.3 us; at 4 rows 6.4-8.4, 4.7-6.7, 4.8-5.5). The sums
    // leave each term in place of its logit, and the scores take them instead of a second exp.
    int32_t* ni = reinterpret_cast<int32_t*>(nl + (size_t)g * span);
    for (int j = 0; j < g; j++)
      for (int t = threadIdx.x; t < n; t += blockDim.x) skv_mma::cp_async4(nl + (size_t)j * span + t, logits + (size_t)j * ld + t);
    for (int t = threadIdx.x; t < n; t += blockDim.x) skv_mma::cp_async4(ni + t, lid + t);
    lid = ni;
  }
  skv_mma::cp_async_commit();
  skv_mma::cp_async_wait<1>();  // the maxima (and the slot ids) are in
  __syncthreads();
  softmax_max(maxes, nb, g, mx);
  if constexpr (NEAR) {
    skv_mma::cp_async_wait<0>();
    __syncthreads();
    softmax_sums<true>(nl, span, g, 0, n, mx, parts + (size_t)rank * g, red_d);
  } else {
    softmax_sums(logits, ld, g, 0, n, mx, parts + (size_t)rank * g, red_d);
  }
  cl.barrier_wait(std::move(started));
  for (int i = threadIdx.x; i < blocks * g; i += blockDim.x)
    if (i / g != rank) cl.map_shared_rank(parts, i / g)[rank * g + i % g] = parts[rank * g + i % g];
  for (int i = threadIdx.x; i < SELECT_PASSES * RADIX; i += blockDim.x) hists[i] = 0;
  cl.sync();
  for (int j = threadIdx.x; j < g; j += blockDim.x) {
    double total = 0;
    for (int b = 0; b < blocks; b++) total += parts[b * g + j];
    inv[j] = head_inverse(mx[j], total);
  }
  __syncthreads();
  if constexpr (NEAR) chunk_scores<true>(nl, span, g, n, mx, inv, scores);
  else chunk_scores(logits, ld, g, n, mx, inv, scores);
  redo_failed_heads(task_queries(a, task), g, s.d, s.score_scale, task_landmarks(a, r, task), s.kv_dtype, L, c0, c0 + n, inv, scores);
  __syncthreads();
  // NOTE: the row loaded again, so that its fields are not held across the redo: held, the kernel
  // spilled 88 / 16 bytes (NEAR false / true) at its 64 registers; now 24 / 0 (12 / 0 before the redo).
  r = a.rows[task / s.kv_heads];
  const int m = cluster_select_top(cl, scores, c0, n, L, S, 1, hists, counts, cl.map_shared_rank(lists, 0),
                                   [&](int c) { return lid[c - c0]; }, sh);
  if (rank == 0) {
    const HeldSlots held{held_ids, O, sc, r.tail_count + 1};
    select_reuse(a, r, task, lists, m, sh, &held);
  }
#else
  skv_pdl_enter();
#endif
}

// The StepScoreSelect instance of a plan: with its slice in shared memory (`near`) or not.
using StepKernel = void (*)(StepArgs, int);
static StepKernel score_select_kernel(bool near) { return near ? StepScoreSelectKernel<true> : StepScoreSelectKernel<false>; }

// ---- 4. fetch values, rebuild keys ----

// Units of values per thread in flight while the keys are rebuilt: 16-byte words (packed pages: 8
// values' 12 bytes and their chunk's base), or with fp8 pages 16 codes and their row's scale (half
// the bytes per value, and two registers more each).
enum { FETCH_PREFETCH = 4, FETCH_PREFETCH_FP8 = 2 };

// The host tier a fetch kernel variant reads (StepPlan.fetch / 2): the storage dtype, fp8 chunks
// (fp8.cuh) or packed bf16 chunks (pack.cuh).
enum FetchTier { TIER_PLAIN = 0, TIER_FP8 = 1, TIER_PACKED = 2 };

// Loads issued where they are written (volatile, a compiler barrier): their registers are not
// needed until after the rebuild, and the compiler may otherwise move them there.
__device__ __forceinline__ uint4 load_now(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ int load_now_s8(const void* p) {
  int v;
  asm volatile("ld.global.s8 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
// 8 packed values (pack_load8: 8 low bytes and a word of codes).
__device__ __forceinline__ uint4 load_now_packed(const uint8_t* chunk, size_t n, size_t w) {
  uint4 v;
  asm volatile("ld.global.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(chunk + 8 * w) : "memory");
  asm volatile("ld.global.u32 %0, [%1];" : "=r"(v.z) : "l"(chunk + n + 4 * w) : "memory");
  v.w = 0;
  return v;
}

// A group of misses of one task: the values by a zero-copy read of pinned host memory, and the
// keys rebuilt (rebuild_keys.cuh), in one block (FETCH_BOTH: the values requested first and kept in
// flight in registers while the same block rebuilds, then stored to their slots) or as two launches
// (a split fetch: FETCH_VALUES on a second stream, on a bounded grid, FETCH_KEYS on the step's).
// NOTE: an unbounded gather kernel on a second stream once did not overlap the rebuild (188 us for
// both at 4 x 128K against 118 and 77 apart, H200, v19); bounded to one block an SM it does, and the
// split is the default (bench/NOTES.md v24). Where the pages hold fp8 (fp8.cuh), a thread's unit is
// a 16-byte word of codes (16 values of one row) and its row's scale byte, dequantized on the way to
// the slot: half the PCIe bytes of bf16. Where they hold packed chunks (pack.cuh), a unit is 8
// values' low bytes and codes (12 of 16 bytes), unpacked on the way; the chunk's base comes from
// device memory first, and a raw chunk's unit is its 16 bytes.
enum FetchPart { FETCH_BOTH, FETCH_VALUES, FETCH_KEYS };

// Returns the chunks of the group it wrote (0: none).
template <int TIER, bool MMA, int PART>
__device__ __forceinline__ int fetch_group(const StepArgs& a, int task, int group, float* smem) {
  constexpr bool FP8 = TIER == TIER_FP8;
  SkvStepRow r;
  if (!sparse_task(a, task, &r)) return 0;
  const SkvStep& s = a.s;
  const int h = task % s.kv_heads, S = s.max_selected, C = s.C, d = s.d, kv = s.kv_dtype;
  const int per = rebuild_chunks_per_block(C), first = group * per;
  const int n_miss = ws_ptr<int32_t>(a, a.at.n_miss)[task];
  if (first >= n_miss) return 0;
  const int n = min(per, n_miss - first);
  const size_t o = (size_t)task * S + first;
  const int32_t* ids = ws_ptr<int32_t>(a, a.at.miss_ids) + o;
  const int32_t* slots = ws_ptr<int32_t>(a, a.at.miss_slots) + o;
  constexpr int P = FP8 ? FETCH_PREFETCH_FP8 : FETCH_PREFETCH;
  const bool fp8 = FP8 && r.fp8_rows > 0;
  const uint8_t* bases = TIER == TIER_PACKED ? reinterpret_cast<const uint8_t*>(r.value_bases) : nullptr;
  const size_t cbytes = (size_t)C * d * skv_dtype_size(kv), stored = fp8 ? fp8_chunk_bytes(C, d) : cbytes;
  const uint64_t* pages = reinterpret_cast<const uint64_t*>(r.value_pages);
  char* selV = static_cast<char*>(elem(r.selected_v, kv, (size_t)h * S * C * d));
  // The hot-value cache: a miss it holds is read from there; a fetched one is also kept there (hot_slots).
  const int32_t* codes = r.hot_slots > 0 ? ws_ptr<int32_t>(a, a.at.hot_codes) + o : nullptr;
  char* hotV = static_cast<char*>(elem(r.hot_v, kv, (size_t)h * r.hot_slots * C * d));
  auto hot = [&](int i) { return codes && codes[i] >= 0; };
  auto paged = [&](int i) {
    const int64_t id = ids[i];
    return reinterpret_cast<const char*>(pages[(size_t)(id / r.page_chunks) * s.kv_heads + h]) + (size_t)(id % r.page_chunks) * stored;
  };
  auto src_of = [&](int i) { return hot(i) ? static_cast<const char*>(hotV + (size_t)codes[i] * cbytes) : paged(i); };
  // Chunk i's base where it comes packed from the host (PACK_RAW otherwise: as its 16-byte words).
  auto base_of = [&](int i) { return bases && !hot(i) ? (int)bases[pack_index(r.page_chunks, s.kv_heads, h, ids[i])] : (int)PACK_RAW; };
  // Unit w of chunk i as loaded (pack_load8's form where packed).
  auto load_unit = [&](int i, size_t w, int base) {
    return base != PACK_RAW ? load_now_packed(reinterpret_cast<const uint8_t*>(paged(i)), (size_t)C * d, w)
                            : load_now(reinterpret_cast<const uint4*>(src_of(i)) + w);
  };
  // Word w (of type T) of chunk i, to its slot and, where kept, to the cache.
  auto put = [&](int i, size_t w, auto x) {
    using T = decltype(x);
    reinterpret_cast<T*>(selV + (size_t)slots[i] * cbytes)[w] = x;
    if (codes && codes[i] <= -2) reinterpret_cast<T*>(hotV + (size_t)(-2 - codes[i]) * cbytes)[w] = x;
  };
  // A thread's unit u of the group: a 16-byte word of the slots (storage dtype), or with fp8 pages
  // 16 values (cw units a chunk; a hot hit's unit is then its dtype's words for those 16 values).
  // Pages and slots start 16-byte aligned (page allocations, cudaMalloc).
  const bool vec = fp8 ? d % 16 == 0 : cbytes % 16 == 0;
  const int dw = (int)skv_dtype_size(kv);  // 16-byte slot words per 16 values
  const size_t cw = fp8 ? (size_t)C * d / 16 : cbytes / 16, units = vec ? n * cw : 0;
  auto land = [&](size_t u, uint4 x, int e) {  // unit u, loaded as x (scale or base e), to its places
    const int i = (int)(u / cw);
    const size_t w = u % cw;
    if (TIER == TIER_PACKED) return put(i, w, e != PACK_RAW ? pack_word(x, e) : x);
    if (!fp8) return put(i, w, x);
    uint4 out[4];
    const bool cached = hot(i);
    if (!cached) fp8_dequantize16(x, e, kv, out);
#pragma unroll
    for (int k = 0; k < 4; k++)
      if (k < dw) put(i, w * dw + k, cached ? reinterpret_cast<const uint4*>(src_of(i))[w * dw + k] : out[k]);
  };
  // 1. Keys; once U and SVh are in shared memory, the first P units of every thread are requested,
  // and travel while the keys are computed. NOTE: requested before the staging loads, the fetch
  // took 60 us at 1 x 128K and 151 at 4 x 128K; after them, 51 and 136 (H200): the slow PCIe reads
  // seem to hold up the staging loads issued behind them.
  uint4 pre[P];
  int pre_e[P];
  const RebuildArgs ra{reinterpret_cast<const void*>(r.u), kv, r.rank, elem(r.sv, kv, (size_t)h * d), kv,
                       (int64_t)s.kv_heads * d, d, C, reinterpret_cast<const double*>(s.inv_freq), s.rope_style,
                       elem(r.selected_k, kv, (size_t)h * S * C * d), kv, d, MMA};
  if (PART == FETCH_KEYS) {
    rebuild_group(ra, ids, slots, n, smem);
    return n;
  }
  auto request = [&] {
    if (TIER == TIER_PACKED) {  // the bases first, all in flight together
#pragma unroll
      for (int k = 0; k < P; k++) {
        const size_t u = threadIdx.x + (size_t)k * blockDim.x;
        if (u < units) pre_e[k] = base_of((int)(u / cw));
      }
    }
#pragma unroll
    for (int k = 0; k < P; k++) {
      const size_t u = threadIdx.x + (size_t)k * blockDim.x;
      const int i = (int)(u / cw);
      if (u >= units || (fp8 && hot(i))) continue;  // a hot hit's unit is read from device memory later
      if (TIER == TIER_PACKED) {
        pre[k] = load_unit(i, u % cw, pre_e[k]);
        continue;
      }
      pre[k] = load_now(reinterpret_cast<const uint4*>(src_of(i)) + u % cw);
      if (fp8) pre_e[k] = load_now_s8(fp8_scale_of(paged(i), C, d, u % cw * 16));
    }
  };
  if (PART == FETCH_VALUES) request();
  else rebuild_group(ra, ids, slots, n, smem, request);
  // 2. The values land in their slots.
#pragma unroll
  for (int k = 0; k < P; k++) {
    const size_t u = threadIdx.x + (size_t)k * blockDim.x;
    if (u < units) land(u, pre[k], pre_e[k]);
  }
  for (size_t u = threadIdx.x + (size_t)P * blockDim.x; u < units; u += blockDim.x) {
    const int i = (int)(u / cw);
    if (TIER == TIER_PACKED) {
      const int base = base_of(i);
      land(u, load_unit(i, u % cw, base), base);
      continue;
    }
    const bool coded = fp8 && !hot(i);
    land(u, coded || !fp8 ? reinterpret_cast<const uint4*>(src_of(i))[u % cw] : uint4{}, coded ? *fp8_scale_of(paged(i), C, d, u % cw * 16) : 0);
  }
  if (vec) return n;
  // Shapes whose units do not fill 16-byte words: value by value (every dtype is at least 2 bytes).
  const size_t values = (size_t)C * d;
  for (size_t j = threadIdx.x; j < n * values; j += blockDim.x) {
    const int i = (int)(j / values);
    const size_t e = j % values;
    const int base = base_of(i);
    const float v = fp8 && !hot(i)        ? fp8_chunk_value(reinterpret_cast<const uint8_t*>(paged(i)), C, d, e)
                    : base != PACK_RAW ? bf16_to_f32(pack_read(reinterpret_cast<const uint8_t*>(paged(i)), values, base, e))
                                       : load_f32(src_of(i), kv, e);
    store_f32(selV + (size_t)slots[i] * cbytes, kv, e, v);
    if (codes && codes[i] <= -2) store_f32(hotV + (size_t)(-2 - codes[i]) * cbytes, kv, e, v);
  }
  return n;
}

// Item w of the launch is task task0 + w / groups, miss group w % groups. A split fetch's values
// take a bounded grid (StepPlan.value_grid), so that the step's other kernels find SMs while these
// reads wait on PCIe; each block then takes every gridDim.x-th item.
// TIER: TIER_FP8 where some row's pages hold fp8, TIER_PACKED where some row's are packed. NOTE: a
// variant of its own: the scales and the dequantization in the one kernel made ptxas spill inside
// the rebuild's loop (116 bytes at 128 registers) for every row.
// MMA: the rebuild on the tensor cores (its 54 KB of shared memory allow 3-4 blocks an SM, the f32
// path's 102 KB 2). NOTE: bounded to 3 blocks (80 registers); at 4 x 128K that read no faster than
// 2 blocks at 128 registers (fetch 123 / 86 / 67 us plain / fp8 / fp8 + hot against 123 / 86 / 65).
template <int TIER, bool MMA, int PART>
__global__ void __launch_bounds__(REBUILD_THREADS, MMA ? 3 : 2) StepFetchKernel(StepArgs a, int task0, int tasks, int groups) {
  skv_pdl_enter();
  extern __shared__ float smem[];
  for (int w = blockIdx.x; w < tasks * groups; w += gridDim.x) {
    if (w != (int)blockIdx.x) __syncthreads();  // the last item's rebuild may still read the shared memory
    const int task = task0 + w / groups, n = fetch_group<TIER, MMA, PART>(a, task, w % groups, smem);
    // The group's keys and values landed (every thread's stores before the count): the attention's
    // blocks of this task wait for 2 per miss (Attention's `landed`), not for the whole launch.
    if (n == 0) continue;
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(ws_ptr<int32_t>(a, a.at.landed) + task, PART == FETCH_BOTH ? 2 * n : n);
    }
  }
}

using FetchKernel = void (*)(StepArgs, int, int, int);

// The fetch kernel of a step's variant (StepPlan.fetch: TIER * 2 + MMA) for one part.
template <int TIER>
static FetchKernel fetch_kernel_of(bool mma, int part) {
  if (part == FETCH_VALUES) return StepFetchKernel<TIER, false, FETCH_VALUES>;
  return mma ? StepFetchKernel<TIER, true, FETCH_BOTH> : StepFetchKernel<TIER, false, FETCH_BOTH>;
}
FetchKernel fetch_kernel(int fetch, int part) {
  const int tier = fetch / 2;
  const bool mma = fetch % 2;
  if (part == FETCH_KEYS) return mma ? StepFetchKernel<TIER_PLAIN, true, FETCH_KEYS> : StepFetchKernel<TIER_PLAIN, false, FETCH_KEYS>;
  return tier == TIER_FP8 ? fetch_kernel_of<TIER_FP8>(mma, part) : tier == TIER_PACKED ? fetch_kernel_of<TIER_PACKED>(mma, part) : fetch_kernel_of<TIER_PLAIN>(mma, part);
}

// ---- compaction ----

// Block (row b, y), for tokens t = y, y + gridDim.y, ...: U row store_tokens + t = K_pre[t] . proj,
// K_pre = the tail's key t of every head with RoPE undone, heads side by side (compactRow's
// ConvertRows + Rope + Gemm + Convert).
__global__ void __launch_bounds__(256) CompactKeysKernel(StepArgs a) {
  skv_pdl_enter();
  extern __shared__ float K[];  // [Hkv * d]
  const SkvStep& s = a.s;
  const SkvStepRow r = a.rows[blockIdx.x];
  const int n = compacted_chunks(s, r) * s.C;
  const int d = s.d, D = s.kv_heads * d, half = d / 2, kv = s.kv_dtype;
  const double* inv_freq = reinterpret_cast<const double*>(s.inv_freq);
  // NOTE: tokens gridDim.y apart: a grid's y is at most 65535, and a recent region may hold 2^20.
  for (int t = blockIdx.y; t < n; t += gridDim.y) {
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
      const int h = i / d, e = i % d;
      K[i] = load_f32(reinterpret_cast<const void*>(r.tail_k), kv, ((size_t)h * r.tail_capacity + t) * d + e);
    }
    __syncthreads();
    for (int w = threadIdx.x; w < s.kv_heads * half; w += blockDim.x) {
      const int h = w / half, i = w % half;
      float c, sn;
      rope_rotation(r.store_tokens + t, inv_freq[i], &c, &sn);
      rope_rotate(K + (size_t)h * d, half, i, s.rope_style, c, -1.f * sn);
    }
    __syncthreads();
    for (int j = threadIdx.x; j < r.rank; j += blockDim.x) {
      float acc = 0.f;
      for (int k = 0; k < D; k++) acc = fmaf(K[k], load_f32(reinterpret_cast<const void*>(r.proj), kv, (size_t)k * r.rank + j), acc);
      store_f32(reinterpret_cast<void*>(r.u), kv, (size_t)(r.store_tokens + t) * r.rank + j, acc);
    }
    __syncthreads();  // K is the next token's
  }
}

// Block (row b, head h, y), for chunks i = y, y + gridDim.y, ...: the chunk's values to its host
// page (quantized or packed where it holds fp8 or packed chunks); its landmark and id appended
// after the head's landmarks (the count is raised by CompactTail, after every block read it), the
// head's landmark bound raised to the stored landmark's max |L_i| (read back: what the logits will
// see, rounded).
__global__ void __launch_bounds__(LANDMARK_THREADS) CompactChunksKernel(StepArgs a) {
  skv_pdl_enter();
  extern __shared__ float L[];  // [d]
  __shared__ float red[64];
  const SkvStep& s = a.s;
  const int b = blockIdx.x / s.kv_heads, h = blockIdx.x % s.kv_heads;
  const SkvStepRow r = a.rows[b];
  const int m = compacted_chunks(s, r), d = s.d, C = s.C, kv = s.kv_dtype;
  if (m == 0) return;
  const int Lh = head_counts(r, h)[SKV_HEAD_LANDMARKS];
  float big = 0.f;
  // NOTE: chunks gridDim.y apart (at most 65535 a grid; a recent region may hold 2^20 chunks).
  for (int i = blockIdx.y; i < m; i += gridDim.y) {
    const int64_t c = r.store_tokens / C + i;
    const size_t cbytes = r.fp8_rows > 0 ? fp8_chunk_bytes(C, d) : (size_t)C * d * skv_dtype_size(kv);  // in the pages
    const char* src = static_cast<const char*>(elem(r.tail_v, kv, ((size_t)h * r.tail_capacity + (size_t)i * C) * d));
    char* page = reinterpret_cast<char*>(reinterpret_cast<const uint64_t*>(r.value_pages)[(size_t)(c / r.page_chunks) * s.kv_heads + h]);
    char* dst = page + (size_t)(c % r.page_chunks) * cbytes;
    if (r.fp8_rows > 0) {
      fp8_quantize_rows(src, kv, C, d, reinterpret_cast<uint8_t*>(dst));
    } else if (r.value_bases) {
      const int base = pack_chunk_block(reinterpret_cast<const uint16_t*>(src), (size_t)C * d, reinterpret_cast<uint8_t*>(dst));
      if (threadIdx.x == 0) reinterpret_cast<uint8_t*>(r.value_bases)[pack_index(r.page_chunks, s.kv_heads, h, c)] = (uint8_t)base;
    } else
      for (size_t w = threadIdx.x; w < cbytes / 2; w += blockDim.x)
        reinterpret_cast<uint16_t*>(dst)[w] = reinterpret_cast<const uint16_t*>(src)[w];
    void* lm = elem(r.landmarks, kv, ((size_t)h * r.chunk_capacity + Lh + i) * d);
    chunk_landmark(elem(r.tail_k, kv, (size_t)h * r.tail_capacity * d), kv, d, C, d, i, L, red, false,
                   [&](int j, float v) {
                     store_f32(lm, kv, (size_t)j, v);
                     big = fmaxf(big, fabsf(load_f32(lm, kv, (size_t)j)));
                   });
    if (threadIdx.x == 0) reinterpret_cast<int32_t*>(r.landmark_ids)[(size_t)h * r.chunk_capacity + Lh + i] = (int32_t)c;
    __syncthreads();  // L and red are the next chunk's
  }
  big = warp_max(big);
  if (threadIdx.x % 32 == 0 && big > 0.f) atomicMax(landmark_bound(r, h, s.kv_heads), __float_as_int(big));
}

// Block (row b, head h, k or v): rows [n, count) of the tail move to [0, count - n), in ascending
// tiles (each tile read before it is written, so the overlap is safe); the landmark count rises.
__global__ void __launch_bounds__(256) CompactTailKernel(StepArgs a) {
  skv_pdl_enter();
  const SkvStep& s = a.s;
  const int b = blockIdx.x / s.kv_heads, h = blockIdx.x % s.kv_heads;
  const SkvStepRow r = a.rows[b];
  const int m = compacted_chunks(s, r);
  if (m == 0) return;
  const int n = m * s.C, cnt = r.tail_count + 1;
  const size_t esize = skv_dtype_size(s.kv_dtype);
  const size_t halves = (size_t)s.d * esize / 2;  // 16-bit words per row
  uint16_t* base = static_cast<uint16_t*>(elem(blockIdx.y ? r.tail_v : r.tail_k, s.kv_dtype, (size_t)h * r.tail_capacity * s.d));
  const size_t total = (size_t)(cnt - n) * halves, shift = (size_t)n * halves;
  for (size_t t0 = 0; t0 < total; t0 += blockDim.x * 4) {
    uint16_t v[4];
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const size_t w = t0 + threadIdx.x + (size_t)k * blockDim.x;
      if (w < total) v[k] = base[shift + w];
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const size_t w = t0 + threadIdx.x + (size_t)k * blockDim.x;
      if (w < total) base[w] = v[k];
    }
    __syncthreads();
  }
  if (blockIdx.y == 0 && threadIdx.x == 0) {
    head_counts(r, h)[SKV_HEAD_LANDMARKS] += m;
    if (h == 0) atomicAdd(&reinterpret_cast<double*>(s.counters)[SKV_COMPACTIONS_COUNTER], 1.0);
  }
}

// Dynamic shared memory of StepSelect: the SELECT_LISTS per-slot lists and the scores where each fits.
size_t select_smem(int max_l, int S, bool lists, bool scores) {
  return sizeof(float) * ((lists ? (size_t)SELECT_LISTS * S : 0) + (scores ? (size_t)max_l : 0));
}

// StepScoreSelect's shared memory, and its clusters past the portable size. *wide: whether the
// device took that (asked once per device: a device that refuses it runs at most 8 a cluster).
cudaError_t select_optin(bool near, size_t smem, bool* wide = nullptr) {
  static int known[2][64] = {};  // 1: takes non-portable clusters, -1: refused
  const StepKernel kernel = score_select_kernel(near);
  int took = 0;
  SKV_CUDA_CALL(skv_per_device(known[near], &took, [&](int, int* v) {
    *v = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess ? 1 : -1;
    cudaGetLastError();
    return cudaSuccess;
  }));
  if (wide) *wide = took > 0;
  return skv_smem_optin(kernel, smem);
}

// Clusters of n StepScoreSelect blocks with `smem` bytes each that the device runs at once (the
// driver's count, which also knows how clusters sit on the GPCs; -1 for none), read once per
// device, n and 16 KB of shared memory (the count changes with it only in steps).
cudaError_t resident_select_clusters(bool near, int n, size_t smem, int* count) {
  static int known[2][SELECT_CLUSTER_MAX + 1][SELECT_SMEM_MAX / (16 * 1024) + 1][64] = {};
  const size_t k = smem / (16 * 1024), bytes = (k + 1) * 16 * 1024;
  const StepKernel kernel = score_select_kernel(near);
  return skv_per_device(known[near][n][k], count, [&](int, int* v) {
    SKV_CUDA_CALL(select_optin(near, bytes));  // n is past 8 only where the device took that (select_cluster)
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim = {1, (unsigned)n, 1};
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(1, n);
    cfg.blockDim = SELECT_CLUSTER_THREADS;
    cfg.dynamicSmemBytes = bytes;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    const cudaError_t asked = cudaOccupancyMaxActiveClusters(v, kernel, &cfg);
    // A size past the portable 8 may be one the device's GPCs cannot place at all (a smaller part or
    // a MIG slice) though the kernel took the attribute: counted as none, so the plan steps down.
    if (asked != cudaSuccess && n > SELECT_CLUSTER_PORTABLE) cudaGetLastError(), *v = 0;
    else SKV_CUDA_CALL(asked);
    if (*v == 0) *v = -1;  // none: read, not asked again
    return cudaSuccess;
  });
}

// Blocks per task of StepScoreSelect and its dynamic shared memory; 0 blocks: the one-block path
// (StepSoftmaxSums, StepScores, StepSelect), for devices without clusters, for SkvStep.select_blocks
// 1, where a slice's scores and the lists would not fit in shared memory, and by default where
// no clusters of 4 or more would all run at once. With `near`, the blocks also hold their slice's logits
// and landmark ids (StepScoreSelect's `near`). prefer > 1: by default, that cluster where its
// shared memory allows, whether or not all its tasks run at once (small_groups).
cudaError_t select_cluster(const SkvStep& s, const StepLayout& at, int tasks, bool near, int prefer, int* blocks, size_t* smem) {
  int major = 0;
  SKV_CUDA_CALL(skv_major(&major));
  *blocks = 0;
  if (major < 9 || s.select_blocks == 1) return cudaSuccess;
  const int g = s.q_heads / s.kv_heads;
  auto bytes_of = [&](int n) { return score_select_smem(n, g, s.max_selected, (int)skv_ceil_div(at.max_l, n), near); };
  int n = s.select_blocks > 1 ? std::min<int>(s.select_blocks, SELECT_CLUSTER_MAX) : SELECT_CLUSTER_MAX;
  bool wide = false;
  SKV_CUDA_CALL(select_optin(near, 0, &wide));
  if (!wide) n = std::min<int>(n, SELECT_CLUSTER_PORTABLE);
  // By default, the largest cluster of 16 (8 where the device takes only portable sizes) down to
  // SELECT_CLUSTER_MIN whose tasks all run at once. NOTE:
  // measured at 128K (queued, H200, bench/NOTES.md v25), the select stage in clusters of 8 / of 4 /
  // one block a task: 26 / 36 / 41 us at batch 1, 32 / 37 / - at batch 3, 49 / 44 / 53 at batch 4,
  // 127 / 103 / 96 at batch 16: a block's slice sets the time while the clusters fit at once. The
  // driver counts 24 to 31 clusters of 8 at once there, though the card has slots for 33 clusters'
  // blocks; halving from 8 gave batch 4 clusters of 4, twice the slice of 8's. Stepping down one
  // block at a time instead (v38, side by side): batch 4 at 128K select 44 -> 33 us, the queued
  // step 0.235 -> 0.231 ms; batch 1 unchanged (8 fits). Clusters of 16 at batch 1 (v39, side by
  // side): the queued step 0.094 -> 0.090 ms, though the stage split (events between the kernels,
  // no overlap) reads the select at 25 us with 8, 12 or 16 alike.
  if (s.select_blocks == 0 && prefer > 1 && bytes_of(std::min(prefer, n)) <= SELECT_SMEM_MAX) {
    n = std::min(prefer, n);
  } else if (s.select_blocks == 0) {
    for (;; n--) {
      int resident = 0;
      if (bytes_of(n) <= SELECT_SMEM_MAX) SKV_CUDA_CALL(resident_select_clusters(near, n, bytes_of(n), &resident));
      if (tasks <= resident) break;
      if (n - 1 < SELECT_CLUSTER_MIN) return cudaSuccess;
    }
  }
  if (bytes_of(n) > SELECT_SMEM_MAX) return cudaSuccess;
  *blocks = n;
  *smem = bytes_of(n);
  return cudaSuccess;
}

// Logit blocks per task for `tasks` tasks of at most nb ranges: the count with the fewest rounds x
// (1 + ranges per block) on this device's resident StepLogits blocks, the 1 standing for a
// block's pipeline fill (about a range's time). NOTE: one range per block, 4 tiles of 128 rows at
// 128K, read the landmarks at 2.3-2.9 TB/s (logits_bench, H200): each block paid its fill, and 4
// x 128K took 4 rounds of them.
// Ties go to fewer rounds, then to more blocks (fewer ranges each where the landmarks are fewer
// than the capacity's). NOTE: a 2-row group at 128K (16 tasks, 33 ranges) ties one round of 16
// blocks with two of 33; the two rounds were 3 us slower at 2 and 4 rows (H100, bench/NOTES.md v53):
// the second round's blocks start as the first's end and pay their prologue again.
cudaError_t logit_split(int tasks, int nb, int* split) {
  static int slots[64] = {};
  int n = 0;
  SKV_CUDA_CALL(skv_resident_blocks(StepLogitsKernel, LOGIT_THREADS, LOGIT_SMEM, slots, &n));
  int64_t best = -1, best_rounds = 0;
  for (int b = 1; b <= nb; b++) {
    const int64_t rounds = skv_ceil_div((int64_t)tasks * b, n), cost = rounds * (1 + skv_ceil_div(nb, b));
    if (best < 0 || cost < best || (cost == best && rounds <= best_rounds)) best = cost, best_rounds = rounds, *split = b;
  }
  return cudaSuccess;
}

StepLayout layout(const SkvStep& s, const SkvStepRow* rows) {
  StepLayout at{};
  at.tasks = s.batch * s.kv_heads;
  int64_t max_total = 1;
  for (int b = 0; b < s.batch; b++) {
    const SkvStepRow& r = rows[b];
    if (r.input < 0) continue;
    int64_t total = r.tail_count + 1;
    if (r.u) {
      at.sparse++;
      at.max_l = std::max(at.max_l, r.chunk_capacity);
      total += (int64_t)(s.max_outliers + s.max_selected) * s.C;
      const int m = (r.tail_count + 1 - s.local_tokens) / s.C;
      if (r.compact && m > 0) at.max_m = std::max(at.max_m, m);
    }
    max_total = std::max(max_total, total);
  }
  const int g = s.q_heads / s.kv_heads;
  at.error = AttentionSplits(at.tasks, max_total, g, s.d, s.kv_dtype, &at.max_splits);
  if (at.error != cudaSuccess) at.max_splits = 1;  // sizes only: DecodeLayer refuses the step
  size_t off = 0;
  auto take = [&](size_t bytes) { return skv_carve(off, bytes); };
  const size_t T = (size_t)at.tasks, S = (size_t)s.max_selected;
  at.qf = take(sizeof(float) * (size_t)s.batch * s.q_heads * s.d);
  at.logits = take(sizeof(float) * T * g * at.max_l);
  at.maxes = take(sizeof(float) * T * LOGIT_MAX_BLOCKS * g);
  at.sums = take(sizeof(double) * T * LOGIT_MAX_BLOCKS * g);
  at.lists_shared = select_smem(0, s.max_selected, true, false) <= SELECT_LISTS_SMEM_MAX;
  at.scores_shared = select_smem(at.max_l, s.max_selected, at.lists_shared, true) <= SELECT_SMEM_MAX;
  at.scores = take(sizeof(float) * T * at.max_l);
  at.lists = take(at.lists_shared ? 0 : sizeof(int32_t) * T * S * SELECT_LISTS);
  at.miss_ids = take(sizeof(int32_t) * T * S);
  at.miss_slots = take(sizeof(int32_t) * T * S);
  at.hot_codes = take(sizeof(int32_t) * T * S);
  at.n_miss = take(sizeof(int32_t) * T);
  at.landed = take(sizeof(int32_t) * T);
  at.attn = take(sizeof(SkvAttnTask) * T);
  at.segs = take(sizeof(SkvSegment) * T * 3);
  at.part = take(AttentionWorkspace(at.tasks, at.max_splits, g, s.d));
  at.arrivals = at.part + AttentionArrivalsOffset(at.tasks, at.max_splits, g, s.d);
  at.bytes = off;
  return at;
}

// The step profile (benchmarks): events between the stages of each step while it is on.
struct StepMarks {
  cudaEvent_t at[SKV_STEP_STAGES + 1];
};
std::vector<StepMarks> profile_steps;
bool profile_on = false;
SkvStepLaunches launches{};  // since the last DecodeLayerProfile call

// Records the boundary before stage k (k = SKV_STEP_STAGES: the end) of the step being queued.
cudaError_t mark(int k, cudaStream_t stream) {
  if (!profile_on) return cudaSuccess;
  if (k == 0) {
    profile_steps.emplace_back();
    for (cudaEvent_t& e : profile_steps.back().at) SKV_CUDA_CALL(cudaEventCreate(&e));
  }
  return cudaEventRecord(profile_steps.back().at[k], stream);
}

}  // namespace

cudaError_t DecodeLayerProfile(bool on, double* ms, int* steps, SkvStepLaunches* counts) {
  *counts = launches;
  launches = SkvStepLaunches{};
  SKV_CUDA_CALL(AttentionLandedFallbacks(&counts->landed_fallbacks));
  for (int k = 0; k < SKV_STEP_STAGES; k++) ms[k] = 0;
  *steps = (int)profile_steps.size();
  cudaError_t first = cudaSuccess;
  for (StepMarks& m : profile_steps) {
    if (first == cudaSuccess) first = cudaEventSynchronize(m.at[SKV_STEP_STAGES]);
    for (int k = 0; k < SKV_STEP_STAGES && first == cudaSuccess; k++) {
      float t = 0.f;
      first = cudaEventElapsedTime(&t, m.at[k], m.at[k + 1]);
      ms[k] += t;
    }
    for (cudaEvent_t e : m.at) cudaEventDestroy(e);
  }
  profile_steps.clear();
  profile_on = on;
  return first;
}

bool DecodeLayerValid(const SkvStep& s, const SkvStepRow* rows) {
  auto dtype_ok = [](int t) { return t == SKV_F32 || t == SKV_F16 || t == SKV_BF16; };
  if (s.batch < 0 || s.d <= 0 || s.d % 2 || s.kv_heads <= 0 || s.q_heads <= 0 || s.q_heads % s.kv_heads || s.C <= 0) return false;
  if (!dtype_ok(s.kv_dtype) || !dtype_ok(s.io_dtype)) return false;
  if (s.rope_style != SKV_ROPE_HALF && s.rope_style != SKV_ROPE_INTERLEAVED) return false;
  if (s.max_selected < 0 || s.max_outliers < 0 || s.local_tokens < 0 || !s.counters || !s.inv_freq) return false;
  bool fp8 = false, packed = false;  // one tier a step (plan_step's fetch variant)
  for (int b = 0; b < s.batch; b++) {
    const SkvStepRow& r = rows[b];
    if (r.input < 0) continue;
    if (r.tail_count < 0 || (int64_t)r.tail_count + 1 > r.tail_capacity || r.position < 0 || !r.tail_k || !r.tail_v) return false;
    if (!r.u) continue;
    if (r.rank <= 0 || r.store_tokens < 0 || r.store_tokens % s.C || r.chunk_capacity < 0 || r.page_chunks <= 0) return false;
    if (!r.sv || !r.proj || !r.landmarks || !r.landmark_ids || !r.head_counts || !r.selected_k || !r.selected_v ||
        !r.selected_ids || !r.value_pages || (s.max_outliers && (!r.outlier_k || !r.outlier_v)))
      return false;
    if (r.hot_slots < 0 || (r.hot_slots > 0 && (!r.hot_ids || !r.hot_v))) return false;
    if (r.fp8_rows != 0 && r.fp8_rows != s.C) return false;
    if (r.value_bases && (r.fp8_rows != 0 || s.kv_dtype != SKV_BF16)) return false;
    fp8 = fp8 || r.fp8_rows != 0;
    packed = packed || r.value_bases;
    if (fp8 && packed) return false;
    const int m = (r.tail_count + 1 - s.local_tokens) / s.C;
    const int add = r.compact && m > 0 ? m : 0;
    if ((int64_t)r.store_tokens / s.C + add > r.chunk_capacity) return false;
  }
  return true;
}

size_t DecodeLayerWorkspace(const SkvStep& s, const SkvStepRow* rows) { return layout(s, rows).bytes; }

cudaError_t SpecFits(int q_heads, int kv_heads, int d, SkvSmemFit* fit) {
  *fit = SkvSmemFit{};
  if (q_heads <= 0 || kv_heads <= 0 || d <= 0 || q_heads % kv_heads) return cudaErrorInvalidValue;
  const int g = q_heads / kv_heads;
  SKV_CUDA_CALL(skv_smem_fit(StepAppendKernel, append_smem(q_heads, kv_heads, d), "the decode step's append", fit));
  SKV_CUDA_CALL(AttentionFits(g, d, fit));
  return CausalAttentionFits(g, d, fit);
}

namespace {

// The host's choices for a step's launches: shared memory, grids, the fetch kernel's variant. NOTE:
// no implicit padding (StepGraphs compares its bytes).
struct StepPlan {
  int64_t qk_smem, ss_smem, st_smem, rb_smem;
  int split, blocks, groups, fetch;  // blocks: the select's cluster (0: the one-block path); fetch: FetchTier * 2 + MMA, -1: none
  int pipe, split_fetch, value_grid;  // row groups (step_groups); a split fetch (FetchPart) and its values' blocks
  int near;  // StepScoreSelect holds its slice's logits and ids in shared memory
  int fold;  // StepAppend folded into the first row group's StepLogits launch
  int landed;  // the attention's tasks wait for their own misses, not for the fetch kernels' end
};
static_assert(sizeof(StepPlan) == 72, "StepPlan has no implicit padding");

// StepLogits' dynamic shared memory with StepAppend folded in: the stages, then a task's rotated
// query heads and the rotation's pairs. The fold is planned only where those add at most
// FOLD_EXTRA_MAX (g x d up to ~4K), so that the launch keeps most of its resident blocks.
constexpr size_t FOLD_EXTRA_MAX = 16 * 1024;
size_t fold_smem(const SkvStep& s) { return LOGIT_SMEM + sizeof(float) * ((size_t)s.q_heads / s.kv_heads * s.d + s.d); }

// Row groups of a pipelined step: the rows' logits and select run group after group on the step's
// stream, each group's value reads on a second stream as soon as its select is done, and its key
// rebuild on the step's stream after the next group's select, so that one group's reads over PCIe
// overlap the next group's work. SkvStep.step_groups sets the count; 0 takes default_groups: one
// where the values are fp8, 4 from 32 rows with the hot cache, else 2 from 4 rows and 4 from 16.
// Profiled steps take one group (their stage marks are on one stream).
// NOTE: measured at 128K on an H200 (bench/NOTES.md v24), 4 groups took 43 rows from 1.99 to
// 1.69-1.72 ms (32 rows 1.49 -> 1.29) and slowed 4 rows (0.25 -> 0.32): a group's logits and select
// take about as long as all rows' until the rows fill the card. With each group's rebuild before
// the next group's logits, 16 rows were the same with 4 groups; with it one group behind (v40): 4
// rows 0.236 ms in one group, 0.248 in 2; 8 rows 0.42 in one, 0.38 in 2, 0.44 in 4; 16 rows 0.78
// in one, 0.70 in 2, 0.69-0.70 in 4; 43 rows 1.67-1.68 in 4 (1.75 before), 1.82 in 2. With fp8
// values the reads are half as long and no longer hide the groups' cost (43 rows: 1.48 -> 1.61 ms,
// with the hot cache too 1.37 -> 1.61; before v40's order). With the hot cache the misses read over
// PCIe are fewer, and 16 rows lost in 4 groups (v41: 16 x 32K 0.434 ms against 0.313-0.317 in one,
// 16 x 128K 0.650 against 0.615-0.618), so those steps keep the threshold of before v40 (32 rows).
// 4 rows gain from 2 groups only as groups of SMALL_GROUP_ROWS (below): 0.218-0.220 ms against one
// group's 0.229-0.239 in three rounds (v42; with 66 value blocks and the residency's clusters of 7,
// 0.234-0.243).
int default_groups(int rows, bool fp8, bool hot) {
  if (fp8) return 1;
  if (hot) return rows >= 32 ? 4 : 1;
  return rows >= 16 ? 4 : rows >= 4 ? 2 : 1;
}

// Row groups of at most this many rows read their values on every SM and select in clusters of 8:
// their logits and select are short, so the reads beside them need the SMs more than they do.
// NOTE: at 4 x 128K in 2 groups (H200, v41-v42), 132 value blocks against 66: 0.239-0.242 ms against
// 0.249-0.252; with clusters of 8 against the residency rule's 7 (16 tasks): 0.218-0.220 against
// 0.234-0.243. At 8 rows (groups of 4) 66 blocks stay faster (0.376-0.381 against 0.399-0.401).
constexpr int SMALL_GROUP_ROWS = 2;
bool small_groups(const SkvStep& s, int pipe) { return pipe > 1 && skv_ceil_div(s.batch, pipe) <= SMALL_GROUP_ROWS; }

int pipelined_groups(const SkvStep& s, const StepLayout& at, bool fp8, bool hot) {
  if (profile_on || at.sparse < 2 || s.max_selected <= 0) return 1;
  const int groups = s.step_groups > 0 ? s.step_groups : default_groups(s.batch, fp8, hot);
  return std::max(1, std::min(groups, s.batch));
}

// Whether the step's fetch is split in two kernels (the value reads on a second stream beside the
// key rebuild: 0.26 -> 0.25 ms at 4 x 128K, the same at 16 and 43 rows), and the blocks of its value
// reads: one an SM with one group (~1 MB of reads in flight, far more than PCIe's bandwidth x
// latency), half the SMs with several, whose reads run beside the next group's logits and select
// (43 x 128K: 1.92 ms with 132 blocks, 1.72 with 66), every SM again with small_groups.
// SHADOWKV_CUDA_FETCH_SPLIT=0 keeps the fetch whole with one group, SHADOWKV_CUDA_FETCH_GRID=n sets
// the blocks; both are read every step: tests and the bench set them between steps.
cudaError_t value_reads(const SkvStep& s, const StepPlan& p, int* split, int* grid) {
  *split = p.pipe > 1 || !skv_env_off("SHADOWKV_CUDA_FETCH_SPLIT");
  const int forced = getenv("SHADOWKV_CUDA_FETCH_GRID") ? atoi(getenv("SHADOWKV_CUDA_FETCH_GRID")) : 0;
  if (forced > 0) return *grid = forced, cudaSuccess;
  int n = 0;
  SKV_CUDA_CALL(skv_sm_count(&n));
  *grid = p.pipe > 1 && !small_groups(s, p.pipe) ? std::max(1, n / 2) : n;
  return cudaSuccess;
}

cudaError_t plan_step(const SkvStep& s, const StepLayout& at, const SkvStepRow* host_rows, StepPlan* p, bool* mma) {
  *p = StepPlan{};
  p->qk_smem = (int64_t)append_smem(s.q_heads, s.kv_heads, s.d);
  p->fetch = -1;
  *mma = true;
  p->pipe = 1;
  if (at.sparse == 0) return cudaSuccess;
  // The rebuild runs on the tensor cores where every row's can (one path per launch).
  bool fp8 = false, hot = false, packed = false;
  int rank = 0;
  for (int b = 0; s.max_selected > 0 && b < s.batch; b++) {
    const SkvStepRow& r = host_rows[b];
    if (r.input < 0 || !r.u) continue;
    *mma = *mma && rebuild_mma(reinterpret_cast<const void*>(r.u), s.kv_dtype, reinterpret_cast<const void*>(r.sv), s.kv_dtype,
                               (int64_t)s.kv_heads * s.d, s.d, r.rank, s.C);
    rank = std::max(rank, r.rank);
    fp8 = fp8 || r.fp8_rows > 0;
    packed = packed || r.value_bases;
    hot = hot || r.hot_slots > 0;
  }
  p->pipe = pipelined_groups(s, at, fp8, hot);
  const int tasks = (int)skv_ceil_div(s.batch, p->pipe) * s.kv_heads;  // the largest group's
  p->split = std::min(s.logit_split, logit_blocks(at.max_l));
  if (p->split <= 0) SKV_CUDA_CALL(logit_split(tasks, logit_blocks(at.max_l), &p->split));
  size_t ss_smem = 0;
  // The select's slices of logits and ids in shared memory where they fit (SHADOWKV_CUDA_SELECT_NEAR=0
  // leaves them in global memory; read every step: tests set it between steps).
  p->near = !skv_env_off("SHADOWKV_CUDA_SELECT_NEAR");
  const int prefer = small_groups(s, p->pipe) ? SELECT_CLUSTER_PORTABLE : 0;
  if (p->near) SKV_CUDA_CALL(select_cluster(s, at, tasks, true, prefer, &p->blocks, &ss_smem));
  if (!p->blocks) {
    p->near = 0;
    SKV_CUDA_CALL(select_cluster(s, at, tasks, false, prefer, &p->blocks, &ss_smem));
  }
  p->ss_smem = (int64_t)ss_smem;
  // StepAppend inside the first logits launch where a row's append fits in its shared memory
  // (SHADOWKV_CUDA_APPEND_FOLD=0 keeps it a kernel of its own; read every step: tests set it
  // between steps).
  p->fold = !skv_env_off("SHADOWKV_CUDA_APPEND_FOLD") && append_smem(s.q_heads, s.kv_heads, s.d) <= fold_smem(s) &&
            fold_smem(s) - LOGIT_SMEM <= FOLD_EXTRA_MAX;
  if (p->blocks == 0) p->st_smem = (int64_t)select_smem(at.max_l, s.max_selected, at.lists_shared, at.scores_shared);
  if (s.max_selected <= 0) return cudaSuccess;
  p->rb_smem = (int64_t)rebuild_smem_bytes(s.C, s.d, *mma, rank);
  p->groups = (int)skv_ceil_div(s.max_selected, rebuild_chunks_per_block(s.C));
  // NOTE: one tier a step (the validation refuses fp8 rows beside packed ones).
  p->fetch = 2 * (fp8 ? TIER_FP8 : packed ? TIER_PACKED : TIER_PLAIN) + (*mma ? 1 : 0);
  // SHADOWKV_CUDA_LANDED=0 has the attention wait for the fetch kernels' end (read every step).
  p->landed = !skv_env_off("SHADOWKV_CUDA_LANDED");
  return value_reads(s, *p, &p->split_fetch, &p->value_grid);
}

// The second stream of split fetches and its events: one Fork for steps launched directly, one for
// captures (an event recorded while capturing is the graph's).
struct Fork {
  cudaStream_t side = nullptr;
  std::vector<cudaEvent_t> done;  // [group]: its select; the last: every fetch
  cudaError_t ready(int groups) {
    if (!side) SKV_CUDA_CALL(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    while ((int)done.size() < groups + 1) {
      cudaEvent_t e;
      SKV_CUDA_CALL(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      done.push_back(e);
    }
    return cudaSuccess;
  }
};
Fork forks[2];

// The step's launches on `stream` (and a second stream where the fetch is split; captured: into a
// graph), with the profile's marks between the stages. Not captured, the step goes kernel by kernel.
cudaError_t issue(const StepArgs& a, const StepPlan& p, cudaStream_t stream, bool captured) {
  if (!captured) launches.one_by_one++;
  const SkvStep& s = a.s;
  const StepLayout& at = a.at;
  const int g = s.q_heads / s.kv_heads;
  SKV_CUDA_CALL(mark(SKV_STAGE_APPEND, stream));
  // 1. (in 2.'s first launch where the plan folds it)
  const bool fold = p.fold && at.sparse > 0;
  if (!fold) {
    const size_t qk_smem = a.dense ? 0 : (size_t)p.qk_smem;  // a dense step's token is the attention's
    SKV_CUDA_CALL(skv_smem_optin(StepAppendKernel, qk_smem));
    SKV_CUDA_CALL(skv_launch(StepAppendKernel, std::max(s.batch, 1), a.dense ? 32 : APPEND_THREADS, qk_smem, stream, a));
  }
  SKV_CUDA_CALL(mark(SKV_STAGE_LOGITS, stream));
  if (at.sparse > 0) {
    Fork& fork = forks[captured];
    if (p.split_fetch && p.fetch >= 0) SKV_CUDA_CALL(fork.ready(p.pipe));
    // Row group gi's tasks: the first, and how many.
    auto group = [&](int gi) {
      const int t0 = s.batch * gi / p.pipe * s.kv_heads;
      return std::pair<int, int>{t0, s.batch * (gi + 1) / p.pipe * s.kv_heads - t0};
    };
    // A split fetch's key rebuild, of group gi: launched one group behind (after group gi + 1's
    // select), so that the next group's logits and select do not wait for it on the step's stream
    // while this group's values are read on the second. Behind the next group's select it is not
    // `programmatic`: its blocks take no SM until that select has finished, so that that group's
    // value reads, launched at the same select, find the SMs first.
    // NOTE: launched programmatically, the rebuild's blocks held the SMs, waiting, through the
    // select, and the next group's reads began 9 us (4 x 128K) to 21 us (8 x 128K) after their
    // select ended (H200, bench/NOTES.md v43's trace); a greater priority for the reads did not
    // help (v41): the rebuild's blocks were already resident.
    const FetchKernel keys = p.fetch >= 0 ? fetch_kernel(p.fetch, FETCH_KEYS) : nullptr;
    auto rebuild = [&](int gi, bool programmatic) {
      const auto [t0, tasks] = group(gi);
      SKV_CUDA_CALL(skv_smem_optin(keys, (size_t)p.rb_smem));
      return skv_launch_as(programmatic, keys, tasks * p.groups, REBUILD_THREADS, (size_t)p.rb_smem, stream, 0, a, t0, tasks, p.groups);
    };
    for (int gi = 0; gi < p.pipe; gi++) {
      const auto [t0, tasks] = group(gi);
      // 2-3.
      const int append_rows = fold && gi == 0 ? s.batch : 0;
      const size_t l_smem = append_rows ? fold_smem(s) : (size_t)LOGIT_SMEM;
      SKV_CUDA_CALL(skv_smem_optin(StepLogitsKernel, l_smem));
      SKV_CUDA_CALL(skv_launch(StepLogitsKernel, dim3(tasks + append_rows, p.split), LOGIT_THREADS, l_smem, stream, a, t0, append_rows));
      SKV_CUDA_CALL(mark(SKV_STAGE_SELECT, stream));
      if (p.blocks > 0) {
        const StepKernel select = score_select_kernel(p.near);
        SKV_CUDA_CALL(select_optin(p.near, (size_t)p.ss_smem));
        SKV_CUDA_CALL(skv_launch_cluster(select, dim3(tasks, p.blocks), SELECT_CLUSTER_THREADS, (size_t)p.ss_smem, stream,
                                         (unsigned)p.blocks, a, t0));
      } else {
        const dim3 ranges(tasks, logit_blocks(at.max_l));
        SKV_CUDA_CALL(skv_launch(StepSoftmaxSumsKernel, ranges, SCORE_THREADS, sizeof(float) * g, stream, a, t0));
        SKV_CUDA_CALL(skv_launch(StepScoresKernel, ranges, SCORE_THREADS, sizeof(float) * 2 * g, stream, a, t0));
        SKV_CUDA_CALL(skv_smem_optin(StepSelectKernel, (size_t)p.st_smem));
        SKV_CUDA_CALL(skv_launch(StepSelectKernel, tasks, SELECT_THREADS, (size_t)p.st_smem, stream, a, t0));
      }
      SKV_CUDA_CALL(mark(SKV_STAGE_FETCH, stream));
      // 4.
      if (p.fetch < 0) continue;
      if (!p.split_fetch) {
        const FetchKernel fetch = fetch_kernel(p.fetch, FETCH_BOTH);
        SKV_CUDA_CALL(skv_smem_optin(fetch, (size_t)p.rb_smem));
        SKV_CUDA_CALL(skv_launch(fetch, tasks * p.groups, REBUILD_THREADS, (size_t)p.rb_smem, stream, a, t0, tasks, p.groups));
        continue;
      }
      SKV_CUDA_CALL(cudaEventRecord(fork.done[gi], stream));
      SKV_CUDA_CALL(cudaStreamWaitEvent(fork.side, fork.done[gi], 0));
      SKV_CUDA_CALL(skv_launch(fetch_kernel(p.fetch, FETCH_VALUES), std::min(tasks * p.groups, p.value_grid), REBUILD_THREADS,
                               0, fork.side, a, t0, tasks, p.groups));
      if (gi > 0) SKV_CUDA_CALL(rebuild(gi - 1, false));
    }
    if (p.split_fetch && p.fetch >= 0) {
      SKV_CUDA_CALL(rebuild(p.pipe - 1, true));
      SKV_CUDA_CALL(cudaEventRecord(fork.done[p.pipe], fork.side));
      SKV_CUDA_CALL(cudaStreamWaitEvent(stream, fork.done[p.pipe], 0));
    }
  } else {  // no sparse stage ran: they take no time
    SKV_CUDA_CALL(mark(SKV_STAGE_SELECT, stream));
    SKV_CUDA_CALL(mark(SKV_STAGE_FETCH, stream));
  }
  SKV_CUDA_CALL(mark(SKV_STAGE_ATTENTION, stream));
  // 5.
  if (a.dense) {
    SKV_CUDA_CALL(AttentionDense(s, a.rows, a.io, at.max_splits, a.ws + at.part, stream));
  } else {
    // Settled where a fetch kernel precedes it (its blocks waited for the select and StepAppend);
    // then each task waits for its own misses to land (the fetch's counts) where the plan says so.
    const bool settled = at.sparse > 0 && p.fetch >= 0;
    const SkvLanded landed{p.landed ? reinterpret_cast<const int32_t*>(a.ws + at.landed) : nullptr,
                           reinterpret_cast<const int32_t*>(a.ws + at.n_miss)};
    SKV_CUDA_CALL(Attention(reinterpret_cast<const SkvAttnTask*>(a.ws + at.attn), SkvAttnTask{}, at.tasks, at.max_splits, g,
                            s.d, s.scale, s.kv_dtype, a.ws + at.part, stream, settled, settled ? landed : SkvLanded{}));
  }
  SKV_CUDA_CALL(mark(SKV_STAGE_COMPACT, stream));
  // Compaction.
  if (at.max_m > 0) {
    const size_t k_smem = sizeof(float) * (size_t)s.kv_heads * s.d;
    SKV_CUDA_CALL(skv_smem_optin(CompactKeysKernel, k_smem));
    SKV_CUDA_CALL(skv_launch(CompactKeysKernel, dim3(s.batch, std::min<int>(at.max_m * s.C, (int)SKV_MAX_BLOCKS)), 256, k_smem, stream, a));
    const size_t l_smem = sizeof(float) * (size_t)s.d;
    SKV_CUDA_CALL(skv_smem_optin(CompactChunksKernel, l_smem));
    SKV_CUDA_CALL(skv_launch(CompactChunksKernel, dim3(at.tasks, std::min<int>(at.max_m, (int)SKV_MAX_BLOCKS)), LANDMARK_THREADS, l_smem, stream, a));
    SKV_CUDA_CALL(skv_launch(CompactTailKernel, dim3(at.tasks, 2), 256, 0, stream, a));
  }
  return mark(SKV_STEP_STAGES, stream);
}

// The step's launches as CUDA graphs, one per distinct (StepArgs, StepPlan): a step whose bytes
// equal an earlier one's is captured (the second time) or replays its graph in one launch (after).
// NOTE: the six to nine launches of a step cost ~16 us of host time on the H200 machine's host, a
// graph launch ~1.3 (launch_bench.cu); a model's layers and the upload blocks used in turn make a
// few hundred distinct steps, each captured once. Steps read back one by one at 1 x 128K: 0.138-0.190 ms against 0.149-0.197 launched
// one by one (H200, side by side); queued steps are the GPU's and unchanged.
// The step's q, k, v and out are not in the key (the kernels read them from SkvStepIo in device
// memory): a loop whose tensors move every step replays the same graphs as one whose tensors stay.
// SHADOWKV_CUDA_GRAPHS=0 launches every step's kernels one by one. NOTE: the capture stream is the
// first device's, as the upload stream is (one device per process).
struct StepGraphs {
  struct Key {
    StepArgs a;
    StepPlan p;
  };
  struct Entry {
    Key key;
    cudaGraphExec_t exec;
    uint64_t used;
  };
  enum { CAPACITY = 1024, SEEN_CAPACITY = 4096 };
  std::unordered_map<uint64_t, Entry> entries;  // by the key's hash; a collision replaces
  // Hashes of steps launched one by one once and not captured yet. NOTE: a step is captured the
  // second time its bytes come, not the first: a loop whose output or inputs move every step (a
  // fresh buffer each time) would otherwise capture and instantiate a graph for every step, more
  // host time than launching. The bench's queued pass, with an output tensor of its own, captured
  // its first steps' graphs inside the timed window (bench/NOTES.md v22). A hash collision only
  // captures a step early.
  std::unordered_set<uint64_t> seen;
  cudaStream_t capture = nullptr;
  uint64_t clock = 0;
  bool broken = false;  // a capture failed: launch one by one from then on

  static bool on() {
    static const bool v = !skv_env_off("SHADOWKV_CUDA_GRAPHS");
    return v;
  }

  static uint64_t hash(const Key& k) {  // FNV-1a over the key's bytes
    const unsigned char* b = reinterpret_cast<const unsigned char*>(&k);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof k; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
  }

  cudaError_t launch(const StepArgs& a, const StepPlan& p, cudaStream_t stream) {
    Key key;
    memcpy(&key.a, &a, sizeof a);
    memcpy(&key.p, &p, sizeof p);
    const uint64_t h = hash(key);
    auto it = entries.find(h);
    if (it != entries.end() && memcmp(&it->second.key, &key, sizeof key) == 0) {
      it->second.used = ++clock;
      launches.replayed++;
      return cudaGraphLaunch(it->second.exec, stream);
    }
    if (seen.erase(h) == 0) {  // the first sighting
      if (seen.size() >= SEEN_CAPACITY) seen.clear();
      seen.insert(h);
      return issue(a, p, stream, false);
    }
    cudaGraphExec_t exec = nullptr;
    if (!make(a, p, &exec)) {
      broken = true;
      return issue(a, p, stream, false);
    }
    launches.captured++;
    if (it != entries.end()) {
      cudaGraphExecDestroy(it->second.exec);
      entries.erase(it);
    } else if (entries.size() >= CAPACITY) {  // the least recently used goes
      auto lru = entries.begin();
      for (auto e = entries.begin(); e != entries.end(); ++e)
        if (e->second.used < lru->second.used) lru = e;
      cudaGraphExecDestroy(lru->second.exec);
      entries.erase(lru);
    }
    entries.emplace(h, Entry{key, exec, ++clock});
    return cudaGraphLaunch(exec, stream);
  }

  // Captures the step's launches on a stream of its own (nothing runs) and instantiates them.
  bool make(const StepArgs& a, const StepPlan& p, cudaGraphExec_t* exec) {
    if (!capture && cudaStreamCreateWithFlags(&capture, cudaStreamNonBlocking) != cudaSuccess) return cudaGetLastError(), false;
    if (cudaStreamBeginCapture(capture, cudaStreamCaptureModeRelaxed) != cudaSuccess) return cudaGetLastError(), false;
    const cudaError_t issued = issue(a, p, capture, true);
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(capture, &graph);
    const bool ok = issued == cudaSuccess && ended == cudaSuccess && graph && cudaGraphInstantiate(exec, graph, 0) == cudaSuccess;
    if (graph) cudaGraphDestroy(graph);
    if (!ok) cudaGetLastError();
    return ok;
  }
};
StepGraphs step_graphs;

}  // namespace

cudaError_t DecodeLayer(const SkvStep& s, const SkvStepRow* host_rows, const SkvStepRow* device_rows, const SkvStepIo* device_io,
                        SkvWorkspace ws, cudaStream_t stream) {
  const StepLayout at = layout(s, host_rows);
  if (at.error != cudaSuccess) return at.error;
  if (ws.bytes < at.bytes) return cudaErrorInvalidValue;
  StepPlan p;
  bool mma = true;
  SKV_CUDA_CALL(plan_step(s, at, host_rows, &p, &mma));
  // A step without a sparse row takes the dense attention (AttentionDense) where its kernel fits;
  // SHADOWKV_CUDA_DENSE=0 keeps StepAppend's tasks, =1 refuses such a step that cannot take it
  // (cudaErrorNotSupported, nothing queued): read every step, so tests compare both and know which ran.
  const char* dense_env = getenv("SHADOWKV_CUDA_DENSE");
  const bool dense_step = at.sparse == 0 && s.batch > 0;
  bool dense = false;
  if (dense_step && !skv_env_off("SHADOWKV_CUDA_DENSE"))
    SKV_CUDA_CALL(AttentionDenseFits(s.q_heads / s.kv_heads, s.d, s.kv_dtype, &dense));
  if (dense_step && !dense && dense_env && strcmp(dense_env, "1") == 0) return cudaErrorNotSupported;
  StepArgs a{s, device_rows, device_io, static_cast<char*>(ws.ptr), at, mma, dense};
  a.s.q = a.s.k = a.s.v = a.s.out = 0;  // the graph's key without them: io holds them
  if (at.sparse > 0) {
    launches.logit_split = p.split, launches.select_blocks = p.blocks, launches.row_groups = p.pipe;
    launches.split_fetch = p.split_fetch, launches.value_grid = p.value_grid, launches.near = p.near, launches.fold = p.fold;
    launches.landed = p.landed;
  }
  // The profile's marks are events between the launches: those steps go one by one.
  const bool direct = profile_on || step_graphs.broken || !StepGraphs::on();
  const cudaError_t err = direct ? issue(a, p, stream, false) : step_graphs.launch(a, p, stream);
  launches.graphs_broken = step_graphs.broken;
  return err;
}
