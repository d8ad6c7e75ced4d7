// Decode attention over segments as a list of tasks, the one attention routine of decoding: the
// sparse-attention op runs one task, the fused decode step one per (row, kv head). Defined in
// sparse_attention.cu; plain C++ so that launchers in other files can call it.
#pragma once
#include "launchers.h"

// g query heads of one kv head attending the union of nseg segments (total rows together).
struct SkvAttnTask {
  const float* q;          // [g x d] f32
  const SkvSegment* segs;  // [nseg], device
  int64_t total;           // sum of the segments' n
  void* out;               // [g x d] of out_dtype; null: the task is skipped (a row sitting out)
  double* counters;        // fused step: attendedTokens/heads are counted here (null in the op)
  int nseg;
  int out_dtype;
};

// Splits of a task's keys over blocks (flash-decoding): ceil(total / ATTN_KEYS_PER_SPLIT), at
// most the launch's splits (its grid's y), which AttentionSplits chooses from the number of tasks
// that share the launch (or the step, for the op) and the card: so a task's splits, and its bits,
// depend on its total and on those two, the same in the fused step and in the op called with the
// step's task count. NOTE: at most 32, so that the task's last block merges the partials alone in
// a few microseconds.
// SKV_ATTN_MAX_SPLITS: a build-time knob for bench/gpu/kernels/attention_bench (variants side by side).
#ifndef SKV_ATTN_MAX_SPLITS
#define SKV_ATTN_MAX_SPLITS 32
#endif
enum { ATTN_KEYS_PER_SPLIT = 128, ATTN_MAX_SPLITS = SKV_ATTN_MAX_SPLITS };
// The most splits a task of `total` keys takes: what its workspace must hold.
static inline int attn_max_splits(int64_t total) {
  int64_t s = (total + ATTN_KEYS_PER_SPLIT - 1) / ATTN_KEYS_PER_SPLIT;
  return (int)(s < 1 ? 1 : s > ATTN_MAX_SPLITS ? ATTN_MAX_SPLITS : s);
}

// The splits of a launch of `ntasks` tasks of up to max_total keys (g query heads of d, keys of
// kv_dtype) on the current device: as many as let every block run at once (one wave), or, for more
// tasks than the card holds blocks, the fewest whose waves are at least 90 % full. NOTE: fewer,
// longer blocks read the dense cache faster while they fill the card: 4 x 128K (32 tasks) with 8,
// 16, 32 and 64 splits took 0.519, 0.527, 0.543 and 0.566 ms, and 12 splits (1.45 waves) 0.664
// (attention_bench, H200, 256 resident blocks: bench/NOTES.md v19).
cudaError_t AttentionSplits(int ntasks, int64_t max_total, int g, int d, int kv_dtype, int* splits);

// The workspace of ntasks tasks of up to max_splits splits each: every split's partial results
// (floats), then an arrival count per task (int32, zero when Attention is called), at this offset.
static inline size_t AttentionArrivalsOffset(int ntasks, int max_splits, int g, int d) {
  return sizeof(float) * (size_t)ntasks * (size_t)max_splits * (size_t)g * (size_t)(d + 2);
}
static inline size_t AttentionWorkspace(int ntasks, int max_splits, int g, int d) {
  return AttentionArrivalsOffset(ntasks, max_splits, g, d) + sizeof(int32_t) * (size_t)ntasks;
}
static inline int32_t* AttentionArrivals(void* ws, int ntasks, int max_splits, int g, int d) {
  return reinterpret_cast<int32_t*>(static_cast<char*>(ws) + AttentionArrivalsOffset(ntasks, max_splits, g, d));
}

// SpecFits' parts: Attention's launch for g heads of d (the tile kernel where no register kernel
// takes the shape), and CausalAttention's f32 path (short prefills and every dtype but bf16 at d 64
// or 128 take it; the tensor-core path's shared memory is fixed).
cudaError_t AttentionFits(int g, int d, SkvSmemFit* fit);
cudaError_t CausalAttentionFits(int g, int d, SkvSmemFit* fit);

// The dense step's attention (kernels/decode_layer.cu: every active row without a store), one
// task per (row, kv head) of `rows` (device), in one launch of max_splits splits as Attention's: each
// block makes its task from its row's record, rotates its query heads from the step's input as
// StepAppend does, and the task's last split appends the token's k and v to the tail before it
// reads them. So the launch reads nothing that the kernel before it writes until it merges, and
// waits for that kernel (StepAppend, which then only counts the step and zeroes the arrivals) only
// there: with programmatic dependent launch its reads start while that kernel runs. The same
// splits and bits as StepAppend then Attention. io: the step's q, k, v and out (device,
// launchers.h SkvStepIo). ws: as Attention's.
cudaError_t AttentionDense(const SkvStep& s, const SkvStepRow* rows, const SkvStepIo* io, int max_splits, void* ws,
                           cudaStream_t stream);
// Whether AttentionDense takes g heads of d with kv_dtype keys on the current device: the shapes of
// the register kernels, where its kernel has as many blocks resident as Attention's (the splits are
// Attention's).
cudaError_t AttentionDenseFits(int g, int d, int kv_dtype, bool* fits);
// Runs `ntasks` tasks from the device list `tasks`, or the single task `one` when tasks is null
// (ntasks = 1), in one launch: each task's last block to finish merges its splits. max_splits:
// AttentionSplits' count for these tasks (at most attn_max_splits of the largest total; a task
// takes fewer where its total is smaller). ws: an AttentionWorkspace of these
// sizes whose arrival counts are zero (they are zero again when the launch ends). Writes every
// task's out.
// Per task of a launch, where its keys and values are being written while it runs (the fused step's
// fetch): `landed` counts the chunks written (keys and values, one each), `misses` the chunks to
// write; the task's blocks read keys and values once landed reaches 2 x misses. Null landed: they
// wait for the kernel before the launch to end.
struct SkvLanded {
  const int32_t* landed;
  const int32_t* misses;
};

// Blocks since the last call that stopped polling their task's count and waited for the kernel
// before instead (a count that never came: a bug, which the steady-state test asserts never happens).
cudaError_t AttentionLandedFallbacks(int64_t* n);

// settled: the tasks, their segments and queries were written before the kernel that precedes this
// launch began (it waited for their writers), so that the blocks wait for that kernel only before
// they read keys and values (TaskList), or with `landed` only for their own task's chunks (and for
// the kernel before at their end, so that the launch ends after it).
cudaError_t Attention(const SkvAttnTask* tasks, const SkvAttnTask& one, int ntasks, int max_splits, int g, int d,
                      float scale, int kv_dtype, void* ws, cudaStream_t stream, bool settled = false, SkvLanded landed = {});
