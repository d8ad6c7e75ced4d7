// Decode attention: g query heads over the union of segments (outlier chunks, rebuilt chunks,
// the exact tail), as tasks (attention.h). The keys of a task are split over blocks
// (flash-decoding); each block leaves (m, l, acc), and the task's last block to finish merges them.
// bf16 keys and values at d 64/128 with g in {1, 2, 4, 8} take the tensor cores (FlashDecodeMmaKernel:
// tiles streamed through shared memory by cp.async, queries and probabilities split into bf16 hi +
// lo); other common shapes (d 64/128/256, g up to 8) a register kernel: 16 lanes per key row, 16-byte
// loads, the online softmax in base 2; the rest the shared-memory tile routine of
// online_softmax.cuh. Mirrors runtime/wasm/sparse_attention.cc (skv_sparse_attention).
#include "attend_f64.cuh"
#include "attention.h"
#include "mma.cuh"
#include "online_softmax.cuh"
#include "step_token.cuh"

namespace {

constexpr float LOG2E = 1.4426950408889634f;
enum { FLASH_THREADS = 128, FLASH_LANES = 16, FLASH_GROUPS = FLASH_THREADS / FLASH_LANES };

// A task's splits (attention.h): one per ATTN_KEYS_PER_SPLIT keys, at most the launch's.
__device__ __forceinline__ int attn_splits(int64_t total) {
  const int64_t s = (total + ATTN_KEYS_PER_SPLIT - 1) / ATTN_KEYS_PER_SPLIT;
  return (int)(s < 1 ? 1 : s > (int64_t)gridDim.y ? (int64_t)gridDim.y : s);
}

// Keys per split: a whole number of ATTN_TILE rows.
__device__ __forceinline__ int64_t attn_per_split(int64_t total, int nb) {
  const int64_t keys = (total + nb - 1) / nb;
  return (keys + ATTN_TILE - 1) / ATTN_TILE * ATTN_TILE;
}

// The fused step's tallies of one task: its attended tokens and heads.
__device__ __forceinline__ void count_task(const SkvAttnTask& t) {
  atomicAdd(&t.counters[SKV_ATTENDED_TOKENS_COUNTER], (double)t.total);
  atomicAdd(&t.counters[SKV_LAST_ATTENDED_TOKENS_COUNTER], (double)t.total);
  atomicAdd(&t.counters[SKV_HEADS_COUNTER], 1.0);
  atomicAdd(&t.counters[SKV_LAST_HEADS_COUNTER], 1.0);
}

// Keys [begin, end) of split blockIdx.y of task t; false when the block has none (a skipped task,
// no key, or a split past the task's count). The first block of a task with no key writes its
// zeros and counts its heads (no split will merge).
__device__ __forceinline__ bool split_range(const SkvAttnTask& t, int g, int d, int64_t* begin, int64_t* end) {
  if (!t.out) return false;
  if (t.total <= 0) {
    if (blockIdx.y == 0) {
      for (int i = threadIdx.x; i < g * d; i += blockDim.x) store_f32(t.out, t.out_dtype, i, 0.f);
      if (t.counters && threadIdx.x == 0) count_task(t);
    }
    return false;
  }
  const int nb = attn_splits(t.total);
  if ((int)blockIdx.y >= nb) return false;
  const int64_t per = attn_per_split(t.total, nb);
  *begin = (int64_t)blockIdx.y * per;
  *end = skv_min64(t.total, *begin + per);
  return true;
}

// DL consecutive elements of a row from element e0, as f32.
template <int DL>
__device__ __forceinline__ void load_slice(const char* row, int dtype, int e0, bool vec, float* x) {
  if (dtype == SKV_F32) {
    const float* r = reinterpret_cast<const float*>(row) + e0;
    if (vec && DL % 4 == 0) {
#pragma unroll
      for (int i = 0; i < DL; i += 4) {
        const float4 w = *reinterpret_cast<const float4*>(r + i);
        x[i] = w.x, x[i + 1] = w.y, x[i + 2] = w.z, x[i + 3] = w.w;
      }
    } else {
#pragma unroll
      for (int i = 0; i < DL; i++) x[i] = r[i];
    }
    return;
  }
  const uint16_t* r = reinterpret_cast<const uint16_t*>(row) + e0;
  if (vec && DL % 8 == 0) {
#pragma unroll
    for (int i = 0; i < DL; i += 8) unpack8_16bit(*reinterpret_cast<const uint4*>(r + i), dtype, x + i);
  } else if (dtype == SKV_BF16) {
#pragma unroll
    for (int i = 0; i < DL; i++) x[i] = bf16_to_f32(r[i]);
  } else {
#pragma unroll
    for (int i = 0; i < DL; i++) x[i] = f16_to_f32(r[i]);
  }
}

// Partials of split blockIdx.y of task blockIdx.x: [g] m, [g] l, [g x d] acc.
__device__ __forceinline__ float* partials(float* part, int max_splits, int g, int d) {
  return part + ((size_t)blockIdx.x * max_splits + blockIdx.y) * (size_t)g * (d + 2);
}

// The task's segments, staged in shared memory when there are few (seg_s: 4 of them).
__device__ __forceinline__ const SkvSegment* stage_segments(const SkvAttnTask& t, SkvSegment* seg_s) {
  if (t.nseg > 4) return t.segs;
  if (threadIdx.x < t.nseg) seg_s[threadIdx.x] = t.segs[threadIdx.x];
  __syncthreads();
  return seg_s;
}

// Whether every row slice of every segment is 16-byte aligned.
__device__ __forceinline__ bool rows_aligned(const SkvSegment* segs, int nseg, size_t esize) {
  bool vec = true;
  for (int s = 0; s < nseg; s++) vec = vec && (segs[s].k | segs[s].v | (uint64_t)(segs[s].ld * esize)) % 16 == 0;
  return vec;
}

// Blocks whose task's count did not come within TaskList's SPIN_LIMIT polls (AttentionLandedFallbacks).
__device__ unsigned long long landed_fallbacks;

// Where a launch's blocks find their tasks (the kernels' Src). TaskList: a device list, or the one
// task, written before the launch: every block waits for the kernel before it first, unless
// `settled`: then the tasks, their segments and queries were written by kernels that the one before
// this launch waited for (the fused step: StepAppend and the select, before the fetch), and only the
// keys and values need the wait (ready()), so the block reads its task, checks its query and makes
// its fragments while the fetch still runs.
struct TaskList {
  const SkvAttnTask* tasks;
  SkvAttnTask one;
  bool settled;
  SkvLanded landed;  // settled only: wait for the task's own chunks (attention.h)
  template <int D, int G>
  struct Shared {
    SkvSegment seg[4];
  };
  // This block's task and keys [begin, end) (false: none), its segments where the kernel reads them.
  template <int D, int G>
  __device__ bool task(Shared<D, G>& sh, SkvAttnTask* t, int64_t* begin, int64_t* end, const SkvSegment** segs) const {
    if (settled) skv_pdl_trigger();
    else skv_pdl_enter();
    *t = tasks ? tasks[blockIdx.x] : one;
    if (settled && (!t->out || t->total <= 0)) skv_pdl_wait();  // split_range writes such a task's output now
    if (!split_range(*t, G, D, begin, end)) {
      done();
      return false;
    }
    *segs = stage_segments(*t, sh.seg);
    return true;
  }
  // Whether the first tiles may be read before token() (last_early: they include the split's last):
  // where the launch waited for the kernel before it, nothing is written.
  __device__ bool early(const SkvAttnTask&, int64_t, bool) const { return !settled; }
  // Whether the keys and values may be read only after ready(), which waits for the kernel before.
  __device__ bool late() const { return settled; }
  // NOTE: with `landed`, thread 0 polls the task's count (an acquire load; the fetch counts after a
  // fence), then the proxy fence lets the block's bulk copies read what the fetch stored. A count
  // that never comes (a bug) falls back to the wait after SPIN_LIMIT polls instead of hanging.
  __device__ void ready() const {
    if (!settled) return;
    if (!landed.landed) return skv_pdl_wait();
    if (threadIdx.x == 0) {
      const int need = 2 * landed.misses[blockIdx.x];
      int polls = 0;
      while (load_acquire(landed.landed + blockIdx.x) < need) {
        if (++polls > SPIN_LIMIT) {
          atomicAdd(&landed_fallbacks, 1ull);
          skv_pdl_wait();
          break;
        }
        __nanosleep(128);
      }
    }
    __syncthreads();
    skv_mma::fence_proxy_async_global();
  }
  // At the block's end: with `landed`, the wait it skipped, so that the launch ends after the
  // kernel before it (the next launches wait only for this one).
  __device__ void done() const {
    if (settled && landed.landed) skv_pdl_wait();
  }
  template <int D, int G>
  __device__ void token(Shared<D, G>&, const SkvAttnTask&, int64_t) const {}
  __device__ void merging() const {}
  enum { SPIN_LIMIT = 1 << 22 };
  __device__ static int load_acquire(const int32_t* p) {
    int v;
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");  // sm_70+; the addon builds sm_80+
    return v;
  }
};

// The dense step (AttentionDense): block (row x kv head, split) makes its task from the row's record
// and its query heads from the step's input (step_token.cuh: rotated as StepAppend rotates them), and
// the task's last split appends the token's k and v to the tail, where its last tile reads them. So
// nothing it reads before merging is written by the kernel before it (StepAppend: the step's counts
// and the arrival counts), which it waits for only then: its reads start while that kernel runs.
struct DenseSteps {
  SkvStep s;               // its q, k, v and out unread: io's
  const SkvStepRow* rows;  // device
  const SkvStepIo* io;     // device
  template <int D, int G>
  struct Shared {
    SkvSegment seg;
    SkvStepRow row;
    SkvStepIo io;
    float x[(G + 1) * D];  // the task's query heads, then (last split) the token's k, rotated
    float cs[D];
  };
  template <int D, int G>
  __device__ bool task(Shared<D, G>& sh, SkvAttnTask* t, int64_t* begin, int64_t* end, const SkvSegment** segs) const {
    skv_pdl_trigger();
    const int h = blockIdx.x % s.kv_heads;
    if (threadIdx.x == 0) {
      sh.row = rows[blockIdx.x / s.kv_heads];
      sh.io = *io;
      sh.seg = tail_segment(s, sh.row, h);
    }
    __syncthreads();
    if (sh.row.input < 0) return false;
    *t = row_task(s, sh.io, sh.row, h);
    t->q = sh.x;
    t->segs = &sh.seg;
    t->nseg = 1;
    t->total = sh.row.tail_count + 1;
    *segs = &sh.seg;
    return split_range(*t, G, D, begin, end);
  }
  // Whether the first tiles may be read before token() (last_early: they include the split's last):
  // not where they hold the token's row, which the last split writes.
  __device__ bool early(const SkvAttnTask& t, int64_t end, bool last_early) const { return end < t.total || !last_early; }
  template <int D, int G>
  __device__ void token(Shared<D, G>& sh, const SkvAttnTask& t, int64_t end) const {
    const int h = blockIdx.x % s.kv_heads;
    const bool last = end == t.total;
    token_rows(s, sh.io, sh.row, h * G, G, h, last ? 1 : 0, sh.x, sh.cs);
    if (!last) return;
    token_to_tail(s, sh.io, sh.row, h, 1, sh.x + G * D);
    skv_mma::fence_proxy_async_global();  // the row's bulk copy (another thread's, after a barrier) reads these stores
    __syncthreads();
  }
  __device__ bool late() const { return false; }
  __device__ void ready() const {}
  __device__ void done() const {}
  __device__ void merging() const { skv_pdl_wait(); }
};

// Outputs per thread summed side by side (their loads in flight together). NOTE: the loads of 8
// splits at a time as well made the op slower, 0.153 -> 0.169 ms at 8 tasks x 128K (attention_bench,
// H200, 2026-12-02; also slower in v14's second version).
enum { MERGE_OUT = 4 };

// Shared memory of merge_if_last for g heads: every split's m and l, then each head's 1 / L.
static inline size_t merge_smem_bytes(int g) { return sizeof(float) * (size_t)(2 * ATTN_MAX_SPLITS + 1) * g; }

// Called by every thread of a block once its partials are written: the task's last block to get
// here merges every split's into t.out (out = sum_b acc_b w_b / sum_b l_b w_b, w_b = 2^(m_b - M),
// base e for the tile kernel), and counts the task for the fused step; every other block returns.
// arrivals[blockIdx.x]: zero when the launch began, zero again once the last block has read it.
// smem: merge_smem_bytes(g) of shared memory the block no longer uses. NOTE: a merge launch of its
// own took 7.5-11 us of the decode step (H200, 128K, ncu), mostly its launch and ramp.
// A head whose merged max or sum is not finite (or zero), or whose outputs are not, overflowed f32
// though its inputs are finite: its warp redoes it in float64 (attend_f64) from the task's segments
// (scale and kv_dtype: the launch's), as the wasm op does.
__device__ __forceinline__ void merge_if_last(const SkvAttnTask& t, const float* part, int max_splits, int g, int d, bool base2,
                                              float scale, int kv_dtype, int32_t* arrivals, float* smem) {
  __shared__ int last;
  const int nb = attn_splits(t.total);
  // NOTE: a fence in every thread, then the barrier: with the barrier first and one fence in thread
  // 0 (a split-K semaphore's order), the sparse step's attention stage took 8-12 us longer (H200,
  // 128K x 1 and x 4, side by side in one call; batched merge loads in the same change).
  __threadfence();  // this thread's partials are visible before the block's arrival is counted
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(&arrivals[blockIdx.x], 1) == nb - 1;
    if (last) arrivals[blockIdx.x] = 0;
    __threadfence();
  }
  __syncthreads();
  if (!last) return;
  // NOTE: the partials are read from L2 (__ldcg): this SM's L1 may hold lines of an earlier launch.
  const size_t stride = (size_t)g * (d + 2);
  const float* p = part + (size_t)blockIdx.x * max_splits * stride;
  float *w = smem, *lw = smem + nb * g, *inv = smem + 2 * nb * g;  // [nb x g] m, then weights; [nb x g] l; [g]
  for (int i = threadIdx.x; i < nb * g; i += blockDim.x) {
    w[i] = __ldcg(p + (size_t)(i / g) * stride + i % g);
    lw[i] = __ldcg(p + (size_t)(i / g) * stride + g + i % g);
  }
  __syncthreads();
  // Each head by a warp, lanes over the splits: the max, the weights, and the sum of l w (lane
  // order, then a shuffle tree: a fixed order).
  const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int j = threadIdx.x / 32; j < g; j += warps) {
    float M = -INFINITY;
    for (int b = lane; b < nb; b += 32) M = w[b * g + j] > M ? w[b * g + j] : M;
    M = warp_max(M);
    float L = 0.f;
    for (int b = lane; b < nb; b += 32) {
      const float m = w[b * g + j], wb = m == -INFINITY ? 0.f : base2 ? exp2f(m - M) : skv_exp(m - M);
      w[b * g + j] = wb;
      L += lw[b * g + j] * wb;
    }
    L = warp_sum(L);
    if (lane == 0) inv[j] = attn_result_ok(M, L) ? 1.f / L : NAN;  // NaN: the head is redone below
  }
  __syncthreads();
  // The outputs, MERGE_OUT per thread side by side, each summed over the splits in order.
  const int n = g * d;
  bool bad = false;
  for (int i0 = threadIdx.x; i0 < n; i0 += MERGE_OUT * blockDim.x) {
    float a[MERGE_OUT] = {};
    for (int b = 0; b < nb; b++) {
      const float* pb = p + (size_t)b * stride + 2 * g;
#pragma unroll
      for (int k = 0; k < MERGE_OUT; k++) {
        const int i = i0 + k * blockDim.x;
        if (i < n) a[k] += __ldcg(pb + i) * w[b * g + i / d];
      }
    }
#pragma unroll
    for (int k = 0; k < MERGE_OUT; k++) {
      const int i = i0 + k * blockDim.x;
      if (i >= n) continue;
      const float o = a[k] * inv[i / d];
      if (!isfinite(o)) inv[i / d] = NAN, bad = true;  // a race of equal stores; the head's other outputs are redone
      store_f32(t.out, t.out_dtype, i, o);
    }
  }
  if (__syncthreads_or(bad))
    for (int j = threadIdx.x / 32; j < g; j += warps)
      if (isnan(inv[j])) attend_f64(t.q + (size_t)j * d, d, scale, t.segs, t.nseg, t.total, kv_dtype, t.out, t.out_dtype, (size_t)j * d);
  if (t.counters && threadIdx.x == 0) count_task(t);
}

// Shared memory of flash_simt: the groups' maxima, sums and accumulators.
template <int D, int G>
struct FlashSmem {
  float m[FLASH_GROUPS][G], l[FLASH_GROUPS][G];
  float acc[FLASH_GROUPS][G * D];
};

// The register routine: lanes sub of group grp hold elements [sub*DL, +DL) of the query heads and of
// their accumulators; each group runs its own online softmax (base 2) over its keys (a warp's two groups take adjacent ones),
// and the groups merge in shared memory at the end. Keys [begin, end) of task t; writes this block's partials.
template <int D, int G>
__device__ __forceinline__ void flash_simt(const SkvAttnTask& t, const SkvSegment* segs, bool vec, int64_t begin,
                                           int64_t end, float scale, int kv_dtype, float* part, int max_splits,
                                           FlashSmem<D, G>& sm) {
  constexpr int DL = D / FLASH_LANES;
  // Keys per group per iteration. NOTE: with 4 (168 registers at d 128, g 4: fewer blocks per SM)
  // the dense 4 x 128K step measured 1.77 ms on an H200 against 1.46 with 2 (bench/NOTES.md v7b;
  // other changes in the same run, so not isolated).
  constexpr int KT = 2;
  const size_t esize = kv_dtype == SKV_F32 ? 4 : 2;
  const int grp = threadIdx.x / FLASH_LANES, sub = threadIdx.x % FLASH_LANES, e0 = sub * DL;
  float q[G][DL], acc[G][DL], m[G], l[G];
#pragma unroll
  for (int j = 0; j < G; j++) {
    m[j] = -INFINITY;
    l[j] = 0.f;
#pragma unroll
    for (int e = 0; e < DL; e++) {
      q[j][e] = t.q[j * D + e0 + e] * (scale * LOG2E);
      acc[j][e] = 0.f;
    }
  }
  // NOTE: a warp's two groups take adjacent keys and leave the loop together: the shuffles below
  // need every lane of the warp.
  const int warp = threadIdx.x / 32, warp_keys = (32 / FLASH_LANES) * KT;
  for (int64_t kw = begin + (int64_t)warp * warp_keys; kw < end; kw += (FLASH_THREADS / 32) * warp_keys) {
    const int64_t k0 = kw + (int64_t)(grp % (32 / FLASH_LANES)) * KT;
    float kx[KT][DL], vx[KT][DL], s[KT][G];
#pragma unroll
    for (int kt = 0; kt < KT; kt++) {
      if (k0 + kt < end) {
        const char *kr, *vr;
        locate(segs, t.nseg, k0 + kt, &kr, &vr, esize);
        load_slice<DL>(kr, kv_dtype, e0, vec, kx[kt]);
        load_slice<DL>(vr, kv_dtype, e0, vec, vx[kt]);
      } else {
#pragma unroll
        for (int e = 0; e < DL; e++) kx[kt][e] = vx[kt][e] = 0.f;
      }
    }
#pragma unroll
    for (int kt = 0; kt < KT; kt++)
#pragma unroll
      for (int j = 0; j < G; j++) {
        float x = 0.f;
#pragma unroll
        for (int e = 0; e < DL; e++) x = fmaf(q[j][e], kx[kt][e], x);
#pragma unroll
        for (int o = FLASH_LANES / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
        s[kt][j] = k0 + kt < end ? x : -INFINITY;
      }
#pragma unroll
    for (int j = 0; j < G; j++) {
      float mt = m[j];
#pragma unroll
      for (int kt = 0; kt < KT; kt++) mt = s[kt][j] > mt ? s[kt][j] : mt;
      if (mt == -INFINITY) continue;  // nothing visible yet
      const float f = exp2f(m[j] - mt);  // 0 while m was -inf
      float p[KT], ps = 0.f;
#pragma unroll
      for (int kt = 0; kt < KT; kt++) {
        p[kt] = exp2f(s[kt][j] - mt);
        ps += p[kt];
      }
      l[j] = l[j] * f + ps;
      m[j] = mt;
#pragma unroll
      for (int e = 0; e < DL; e++) {
        float a = acc[j][e] * f;
#pragma unroll
        for (int kt = 0; kt < KT; kt++) a = fmaf(p[kt], vx[kt][e], a);
        acc[j][e] = a;
      }
    }
  }
  // Merge the groups: rescale each to the block's max, then sum in group order.
  if (sub == 0)
#pragma unroll
    for (int j = 0; j < G; j++) sm.m[grp][j] = m[j];
  __syncthreads();
  float* mine = partials(part, max_splits, G, D);
#pragma unroll
  for (int j = 0; j < G; j++) {
    float M = -INFINITY;
    for (int r = 0; r < FLASH_GROUPS; r++) M = sm.m[r][j] > M ? sm.m[r][j] : M;
    const float f = M == -INFINITY || m[j] == -INFINITY ? 0.f : exp2f(m[j] - M);
#pragma unroll
    for (int e = 0; e < DL; e++) sm.acc[grp][j * D + e0 + e] = acc[j][e] * f;
    if (sub == 0) sm.l[grp][j] = l[j] * f;
    if (threadIdx.x == 0) mine[j] = M;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
    float a = 0.f;
    for (int r = 0; r < FLASH_GROUPS; r++) a += sm.acc[r][i];
    mine[2 * G + i] = a;
  }
  if (threadIdx.x < G) {
    float L = 0.f;
    for (int r = 0; r < FLASH_GROUPS; r++) L += sm.l[r][threadIdx.x];
    mine[G + threadIdx.x] = L;
  }
}


// Blocks an SM that FlashDecodeKernel<D, G> is built for: 4 (128 registers) for the shapes whose
// loop fits in them. NOTE: merge_if_last's float64 redo made ptxas take 147-150 registers for
// d 128 x g 4 and d 256 x g 1 (3 blocks an SM instead of 4), though the loop needs no more.
template <int D, int G>
constexpr int flash_min_blocks() { return G * D < 512 || (G * D == 512 && D <= 128) ? 4 : 1; }

template <int D, int G, class Src>
__global__ void __launch_bounds__(FLASH_THREADS, flash_min_blocks<D, G>()) FlashDecodeKernel(Src src, float scale, int kv_dtype, float* part,
                                                                   int max_splits, int32_t* arrivals) {
  __shared__ typename Src::template Shared<D, G> sh;
  __shared__ FlashSmem<D, G> sm;
  SkvAttnTask t;
  int64_t begin, end;
  const SkvSegment* segs;
  if (!src.template task<D, G>(sh, &t, &begin, &end, &segs)) return;
  src.template token<D, G>(sh, t, end);
  const bool vec = rows_aligned(segs, t.nseg, kv_dtype == SKV_F32 ? 4 : 2);
  src.ready();
  flash_simt<D, G>(t, segs, vec, begin, end, scale, kv_dtype, part, max_splits, sm);
  static_assert(sizeof(FlashSmem<D, G>) >= sizeof(float) * (2 * ATTN_MAX_SPLITS + 1) * G, "the merge reuses sm");
  src.merging();
  merge_if_last(t, part, max_splits, G, D, true, scale, kv_dtype, arrivals, reinterpret_cast<float*>(&sm));
  src.done();
}

// The tensor-core kernel: 4 warps, each taking 16 keys of every 64-key tile; tiles of keys and
// values stream through DM_STAGES shared-memory stages by cp.async, so ~64 KB per block are in
// flight (the register kernel had ~8 KB and read 1.5 TB/s on the dense 128K cache). Rows of the
// mma: row j holds head j's scaled query rounded to bf16 (hi), row j + 8 what that missed (lo); the
// keys are bf16, so one product gives both parts and their sum is the f32 logit to ~2^-16 of
// |q||k|. The probabilities are split the same way against the bf16 values. Tasks whose rows are
// not 16-byte aligned or whose queries are huge or not finite (the split would lose their inf / NaN
// semantics) take flash_simt in the same launch.
// SKV_DM_STAGES: a build-time knob for bench/gpu/kernels/attention_bench (variants side by side).
#ifndef SKV_DM_STAGES
#define SKV_DM_STAGES 3
#endif
// SKV_DM_BULK 0: the cp.async loader on sm_90 too (the same knob's purpose).
#ifndef SKV_DM_BULK
#define SKV_DM_BULK 1
#endif
enum { DM_THREADS = 128, DM_WARPS = DM_THREADS / 32, DM_WARP_KEYS = 16, DM_TILE = DM_WARPS * DM_WARP_KEYS,
       DM_STAGES = SKV_DM_STAGES, DM_PAD = 8 };
static_assert((int)DM_THREADS == (int)FLASH_THREADS, "flash_simt runs in the tensor-core kernel's blocks");

template <int D>
constexpr size_t mma_smem_bytes() {
  const size_t stages = sizeof(uint16_t) * DM_STAGES * 2 * DM_TILE * (D + DM_PAD);
  return stages > sizeof(FlashSmem<D, 8>) ? stages : sizeof(FlashSmem<D, 8>);
}

// Tile i of the split [begin, end) of a task's keys into stage i % DM_STAGES of dsm (its keys, then
// its values: DM_TILE rows of D + DM_PAD bf16 each), by cp.async; rows past the split read as
// zeros. One commit group per call, empty past the last tile, so the waits count tiles.
template <int D>
__device__ __forceinline__ void load_kv_tile(uint16_t* dsm, const SkvSegment* segs, int nseg, int64_t begin, int64_t end,
                                             int i, int ntiles) {
  constexpr int LD = D + DM_PAD, TILE = DM_TILE * LD, CPR = D / 8;
  if (i < ntiles) {
    uint16_t* ks = dsm + (i % DM_STAGES) * 2 * TILE;
    for (int c = threadIdx.x; c < DM_TILE * CPR; c += DM_THREADS) {
      const int row = c / CPR, col = c % CPR * 8;
      const int64_t key = begin + (int64_t)i * DM_TILE + row;
      const char *kr, *vr;
      locate(segs, nseg, key < end ? key : end - 1, &kr, &vr, 2);  // NOTE: a valid, aligned source even when zero-filling
      skv_mma::cp_async16(ks + row * LD + col, kr + 2 * col, key < end ? 16 : 0);
      skv_mma::cp_async16(ks + TILE + row * LD + col, vr + 2 * col, key < end ? 16 : 0);
    }
  }
  skv_mma::cp_async_commit();
}

// The same tile on sm_90+, by the bulk-copy engine: thread r < DM_TILE copies key row r, thread
// DM_TILE + r value row r, each on the stage's barrier (DM_THREADS arrivals a phase); rows past the
// split are zeroed by their thread (p = 0 there, but 0 x a stale NaN would not be 0). One
// instruction a row instead of D / 8 cp.async, each with its segment lookup. NOTE: read alone, the
// same tiles streamed at 4.30-4.36 TB/s this way against 4.20 by cp.async (attention_bench, H200,
// bench/NOTES.md v9). Two producer warps loading the tiles into registers and then the stages read
// 4.43 TB/s alone but made this kernel ~6 % slower than these copies (v30: one tile in flight a
// producer thread), and a register loader in the mma warps ~13 % (v29).
template <int D>
__device__ __forceinline__ void load_kv_rows(uint16_t* dsm, uint64_t* bars, const SkvSegment* segs, int nseg, int64_t begin,
                                             int64_t end, int i, int ntiles) {
  static_assert(DM_THREADS == 2 * DM_TILE, "a thread a row");
  constexpr int LD = D + DM_PAD, TILE = DM_TILE * LD;
  if (i >= ntiles) return;
  const int row = threadIdx.x % DM_TILE, isv = threadIdx.x / DM_TILE;
  uint16_t* dst = dsm + (i % DM_STAGES) * 2 * TILE + isv * TILE + row * LD;
  uint64_t* bar = bars + i % DM_STAGES;
  const int64_t key = begin + (int64_t)i * DM_TILE + row;
  skv_mma::fence_proxy_async();  // the block's reads of this stage (ordered by its barrier) come first
  if (key < end) {
    const char *kr, *vr;
    locate(segs, nseg, key, &kr, &vr, 2);
    skv_mma::mbar_arrive_expect(bar, D * 2);
    skv_mma::bulk_copy(dst, isv ? vr : kr, D * 2, bar);
  } else {
#pragma unroll
    for (int c = 0; c < D / 8; c++) reinterpret_cast<uint4*>(dst)[c] = make_uint4(0, 0, 0, 0);
    skv_mma::mbar_arrive_expect(bar, 0);
  }
}

template <int D, int G, class Src>
__global__ void __launch_bounds__(DM_THREADS) FlashDecodeMmaKernel(Src src, float scale, int kv_dtype, float* part,
                                                                   int max_splits, int32_t* arrivals) {
  using namespace skv_mma;
  static_assert(G <= 8 && (D == 64 || D == 128), "rows j and j + 8 of the mma hold head j");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool bulk = SKV_DM_BULK;
#else
  constexpr bool bulk = false;
#endif
  extern __shared__ __align__(16) uint16_t dsm[];
  __shared__ typename Src::template Shared<D, G> sh;
  __shared__ uint64_t bars[DM_STAGES];  // bulk: one barrier a stage
  constexpr int LD = D + DM_PAD, TILE = DM_TILE * LD, STAGE = 2 * TILE, KD = D / 16, NO = D / 8;
  SkvAttnTask t;
  int64_t begin, end;
  const SkvSegment* segs;
  if (!src.template task<D, G>(sh, &t, &begin, &end, &segs)) return;
  const bool vec = rows_aligned(segs, t.nseg, 2);
  // 1. Tiles of keys and values through DM_STAGES stages (load_kv_rows on sm_90+, else load_kv_tile).
  const int ntiles = (int)((end - begin + DM_TILE - 1) / DM_TILE);
  if constexpr (bulk) {
    if (threadIdx.x < DM_STAGES) mbar_init(&bars[threadIdx.x], DM_THREADS);
    mbar_init_fence();
    __syncthreads();
  }
  auto load_tile = [&](int i) {
    if constexpr (bulk) load_kv_rows<D>(dsm, bars, segs, t.nseg, begin, end, i, ntiles);
    else load_kv_tile<D>(dsm, segs, t.nseg, begin, end, i, ntiles);
  };
  auto preamble = [&] {  // every stage but the last, which the loop's first step fills
#pragma unroll
    for (int i = 0; i < DM_STAGES - 1; i++) load_tile(i);
  };
  // The first tiles go out before the query is ready, where the task's source writes none of their rows.
  const bool early = vec && src.early(t, end, ntiles < DM_STAGES);
  if (early) preamble();
  src.template token<D, G>(sh, t, end);
  bool small = true;
  for (int i = threadIdx.x; i < G * D; i += DM_THREADS) small = small && fabsf(t.q[i]) < 1e30f;
  if (!__syncthreads_and(small && vec)) {
    if (early) {  // the tiles in flight land before flash_simt takes their shared memory
      if constexpr (bulk)
        for (int i = 0; i < DM_STAGES - 1 && i < ntiles; i++) mbar_wait(&bars[i], 0u);
      else cp_async_wait<0>();
      __syncthreads();
    }
    src.ready();
    flash_simt<D, G>(t, segs, vec, begin, end, scale, kv_dtype, part, max_splits, *reinterpret_cast<FlashSmem<D, G>*>(dsm));
    src.merging();
    merge_if_last(t, part, max_splits, G, D, true, scale, kv_dtype, arrivals, reinterpret_cast<float*>(dsm));
    src.done();
    return;
  }
  const bool late = src.late();
  if (!early && !late) preamble();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
  const int m = lane / 8, r = lane % 8;  // this lane's ldmatrix row: row r of matrix m
  // 2. Query fragments (A rows gq: hi, gq + 8: lo; heads past G are zeros), times scale / ln 2 as flash_simt.
  uint32_t qa[KD][4];
#pragma unroll
  for (int kd = 0; kd < KD; kd++) {
    float x[4] = {0.f, 0.f, 0.f, 0.f};
    if (gq < G) {
      const float* qr = t.q + gq * D + kd * 16 + 2 * tq;
#pragma unroll
      for (int c = 0; c < 4; c++) x[c] = qr[(c >> 1) * 8 + (c & 1)] * (scale * LOG2E);
    }
    split_bf16x2(x[0], x[1], qa[kd][0], qa[kd][1]);
    split_bf16x2(x[2], x[3], qa[kd][2], qa[kd][3]);
  }
  if (late) {
    src.ready();
    preamble();
  }
  float o[NO][4] = {}, mrow = -INFINITY, lrow = 0.f;  // row gq of this warp: head gq (its hi and lo rows)
  for (int i = 0; i < ntiles; i++) {
    if constexpr (bulk) mbar_wait(&bars[i % DM_STAGES], (unsigned)(i / DM_STAGES) & 1u);
    else cp_async_wait<DM_STAGES - 2>();
    __syncthreads();  // tile i is in; every warp is done with tile i - 1, whose stage the next load takes
    load_tile(i + DM_STAGES - 1);
    const int64_t key0 = begin + (int64_t)i * DM_TILE + warp * DM_WARP_KEYS;
    if (key0 >= end) continue;
    const uint16_t* ks = dsm + (i % DM_STAGES) * STAGE + warp * DM_WARP_KEYS * LD;
    const uint16_t* vs = ks + TILE;
    // 3. Logits of this warp's 16 keys: (q hi, q lo) k, k as B from its rows.
    float s[2][4] = {};
#pragma unroll
    for (int kd = 0; kd < KD; kd++) {
      uint32_t b[4];  // matrices (keys 0-7, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 0-7), (keys 8-15, d 8-15)
      ldsm_x4(b, ks + (r + (m >> 1) * 8) * LD + kd * 16 + (m & 1) * 8);
      mma_bf16(s[0], qa[kd], b[0], b[1]);
      mma_bf16(s[1], qa[kd], b[2], b[3]);
    }
    // 4. Head gq's logits of keys 8 nt + 2 tq + c (hi + lo), the max over the quad, the new running max.
    float x[2][2], mx = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
#pragma unroll
      for (int c = 0; c < 2; c++) {
        x[nt][c] = key0 + nt * 8 + 2 * tq + c < end ? s[nt][c] + s[nt][c + 2] : -INFINITY;
        mx = x[nt][c] > mx ? x[nt][c] : mx;
      }
#pragma unroll
    for (int o2 = 1; o2 < 4; o2 <<= 1) {
      const float w = __shfl_xor_sync(0xffffffffu, mx, o2);
      mx = w > mx ? w : mx;
    }
    const float mn = mx > mrow ? mx : mrow;
    const float f = mn > mrow ? exp2f(mrow - mn) : 1.f;  // 0 while m was -inf
    mrow = mn;
    // 5. p = 2^(logit - m), split hi (row gq) + lo (row gq + 8): the logits' accumulator layout is the A layout.
    float p[2][2], ps = 0.f;
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
#pragma unroll
      for (int c = 0; c < 2; c++) {
        p[nt][c] = mn == -INFINITY ? 0.f : exp2f(x[nt][c] - mn);
        ps += p[nt][c];
      }
    lrow = lrow * f + ps;
    uint32_t pa[4];
    split_bf16x2(p[0][0], p[0][1], pa[0], pa[1]);
    split_bf16x2(p[1][0], p[1][1], pa[2], pa[3]);
    // 6. o = o f + p v, each pair of output tiles summed in a fresh accumulator and joined rounded to
    //    nearest (mma.cuh: the tensor cores truncate).
#pragma unroll
    for (int n0 = 0; n0 < NO; n0 += 2) {
      uint32_t b[4];  // matrices (keys 0-7, d n0), (keys 8-15, d n0), (keys 0-7, d n0 + 1), (keys 8-15, d n0 + 1)
      ldsm_x4_t(b, vs + (r + (m & 1) * 8) * LD + (n0 + (m >> 1)) * 8);
      float a0[4] = {}, a1[4] = {};
      mma_bf16(a0, pa, b[0], b[1]);
      mma_bf16(a1, pa, b[2], b[3]);
#pragma unroll
      for (int c = 0; c < 4; c++) {
        o[n0][c] = fmaf(o[n0][c], f, a0[c]);
        o[n0 + 1][c] = fmaf(o[n0 + 1][c], f, a1[c]);
      }
    }
  }
  // 7. The warps merge as flash_simt's groups do, in the stages' shared memory (every tile issued was waited for).
  if constexpr (!bulk) cp_async_wait<0>();
  __syncthreads();
  lrow += __shfl_xor_sync(0xffffffffu, lrow, 1);
  lrow += __shfl_xor_sync(0xffffffffu, lrow, 2);
  float* wm = reinterpret_cast<float*>(dsm);  // [DM_WARPS][G] maxima, then sums, then [DM_WARPS][G x D]
  float* wl = wm + DM_WARPS * G;
  float* wacc = wl + DM_WARPS * G;
  if (tq == 0 && gq < G) wm[warp * G + gq] = mrow, wl[warp * G + gq] = lrow;
  __syncthreads();
  if (gq < G) {
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < DM_WARPS; w++) M = wm[w * G + gq] > M ? wm[w * G + gq] : M;
    const float fw = mrow == -INFINITY ? 0.f : exp2f(mrow - M);
    float* dst = wacc + (warp * G + gq) * D + 2 * tq;
#pragma unroll
    for (int nt = 0; nt < NO; nt++)
#pragma unroll
      for (int c = 0; c < 2; c++) dst[nt * 8 + c] = (o[nt][c] + o[nt][c + 2]) * fw;
  }
  __syncthreads();
  float* mine = partials(part, max_splits, G, D);
  for (int i = threadIdx.x; i < G * D; i += DM_THREADS) {
    float a = 0.f;
#pragma unroll
    for (int w = 0; w < DM_WARPS; w++) a += wacc[w * G * D + i];
    mine[2 * G + i] = a;
  }
  if (threadIdx.x < G) {
    const int j = threadIdx.x;
    float M = -INFINITY, L = 0.f;
    for (int w = 0; w < DM_WARPS; w++) M = wm[w * G + j] > M ? wm[w * G + j] : M;
    for (int w = 0; w < DM_WARPS; w++) L += wm[w * G + j] == -INFINITY ? 0.f : wl[w * G + j] * exp2f(wm[w * G + j] - M);
    mine[j] = M;
    mine[G + j] = L;
  }
  src.merging();
  merge_if_last(t, part, max_splits, G, D, true, scale, kv_dtype, arrivals, reinterpret_cast<float*>(dsm));
  src.done();
}

// The shared-memory tile kernel (any d and g), natural-exp domain.
__global__ void __launch_bounds__(ATTN_THREADS) TileDecodeKernel(const SkvAttnTask* tasks, SkvAttnTask one, int g, int d,
                                                                 float scale, int kv_dtype, float* part, int max_splits,
                                                                 int32_t* arrivals) {
  skv_pdl_enter();
  extern __shared__ float smem[];  // attn_state's, and then the merge's (tile_smem_bytes)
  __shared__ uint64_t krow[ATTN_TILE], vrow[ATTN_TILE];
  const SkvAttnTask t = tasks ? tasks[blockIdx.x] : one;
  int64_t begin, end;
  if (!split_range(t, g, d, &begin, &end)) return;
  AttnState s = attn_state(smem, g, d);
  for (int i = threadIdx.x; i < g * d; i += blockDim.x) s.q[i] = scale * t.q[i];
  for (int j = threadIdx.x; j < g; j += blockDim.x) s.vis[j] = INT_MAX;  // no mask: every key is visible
  attn_reset(s);
  __syncthreads();
  const size_t esize = kv_dtype == SKV_F32 ? 4 : 2;
  for (int64_t t0 = begin; t0 < end; t0 += ATTN_TILE) {
    const int n = (int)skv_min64(ATTN_TILE, end - t0);
    if (threadIdx.x < n) {
      const char *kr, *vr;
      locate(t.segs, t.nseg, t0 + threadIdx.x, &kr, &vr, esize);
      krow[threadIdx.x] = reinterpret_cast<uint64_t>(kr);
      vrow[threadIdx.x] = reinterpret_cast<uint64_t>(vr);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n * d; i += blockDim.x) {
      const int r = i / d;
      attn_stage_row(s, r, reinterpret_cast<const void*>(krow[r]), reinterpret_cast<const void*>(vrow[r]), kv_dtype, i % d);
    }
    __syncthreads();
    attn_tile(s, n, 0);
  }
  float* mine = partials(part, max_splits, g, d);
  for (int j = threadIdx.x; j < g; j += blockDim.x) {
    mine[j] = s.m[j];
    mine[g + j] = s.l[j];
  }
  for (int i = threadIdx.x; i < g * d; i += blockDim.x) mine[2 * g + i] = s.acc[i];
  merge_if_last(t, part, max_splits, g, d, false, scale, kv_dtype, arrivals, smem);
}

// Dynamic shared memory of the tile kernel: its state, or the merge's where that is larger.
static inline size_t tile_smem_bytes(int g, int d) { return std::max(attn_smem_bytes(g, d), merge_smem_bytes(g)); }

// The shapes FlashDecodeMmaKernel takes (with bf16 keys and values).
template <int D, int G>
constexpr bool has_mma = G <= 8 && (D == 64 || D == 128);

template <int D, int G, class Src>
cudaError_t LaunchFlash(const Src& src, dim3 grid, float scale, int kv_dtype, float* part, int max_splits, int32_t* arrivals,
                        cudaStream_t stream) {
  if constexpr (has_mma<D, G>) {
    if (kv_dtype == SKV_BF16) {
      constexpr size_t smem = mma_smem_bytes<D>();
      SKV_CUDA_CALL(skv_smem_optin(FlashDecodeMmaKernel<D, G, Src>, smem));
      return skv_launch(FlashDecodeMmaKernel<D, G, Src>, grid, DM_THREADS, smem, stream, src, scale, kv_dtype, part, max_splits,
                        arrivals);
    }
  }
  return skv_launch(FlashDecodeKernel<D, G, Src>, grid, FLASH_THREADS, 0, stream, src, scale, kv_dtype, part, max_splits, arrivals);
}

// Blocks of the kernel LaunchFlash<D, G, Src> takes for kv_dtype that the card holds at once.
template <int D, int G, class Src>
cudaError_t FlashSlots(int kv_dtype, int* slots) {
  static int mma[64], simt[64];
  if constexpr (has_mma<D, G>)
    if (kv_dtype == SKV_BF16) return skv_resident_blocks(FlashDecodeMmaKernel<D, G, Src>, DM_THREADS, mma_smem_bytes<D>(), mma, slots);
  return skv_resident_blocks(FlashDecodeKernel<D, G, Src>, FLASH_THREADS, 0, simt, slots);
}

// The register kernels for (d, g) and their resident blocks, or nulls when the shape takes the tile kernel.
struct FlashKernel {
  cudaError_t (*launch)(const TaskList&, dim3, float, int, float*, int, int32_t*, cudaStream_t);
  cudaError_t (*slots)(int, int*);
  cudaError_t (*dense)(const DenseSteps&, dim3, float, int, float*, int, int32_t*, cudaStream_t);
  cudaError_t (*dense_slots)(int, int*);
};
FlashKernel flash_for(int d, int g) {
#define SKV_FLASH(D_, G_)                                                                                               \
  if (d == D_ && g == G_)                                                                                               \
    return {LaunchFlash<D_, G_, TaskList>, FlashSlots<D_, G_, TaskList>, LaunchFlash<D_, G_, DenseSteps>, \
            FlashSlots<D_, G_, DenseSteps>};
  SKV_FLASH(64, 1) SKV_FLASH(64, 2) SKV_FLASH(64, 4) SKV_FLASH(64, 8)
  SKV_FLASH(128, 1) SKV_FLASH(128, 2) SKV_FLASH(128, 4) SKV_FLASH(128, 8)
  SKV_FLASH(256, 1) SKV_FLASH(256, 2) SKV_FLASH(256, 4)
#undef SKV_FLASH
  return {nullptr, nullptr, nullptr, nullptr};
}

}  // namespace

cudaError_t AttentionSplits(int ntasks, int64_t max_total, int g, int d, int kv_dtype, int* splits) {
  const int most = attn_max_splits(max_total);
  int slots = 0;
  const FlashKernel flash = flash_for(d, g);
  if (flash.slots) {
    SKV_CUDA_CALL(flash.slots(kv_dtype, &slots));
  } else {
    int fresh[64] = {};  // NOTE: not remembered: the tile kernel's shared memory, and so its blocks an SM, depend on g and d
    SKV_CUDA_CALL(skv_resident_blocks(TileDecodeKernel, ATTN_THREADS, tile_smem_bytes(g, d), fresh, &slots));
  }
  // NOTE: chosen from the task count and the card, never from max_total, so that a task's splits
  // (min(its own most, this)) are the same whichever tasks share the launch.
  int s = ATTN_MAX_SPLITS;
  if (ntasks >= 1 && ntasks <= slots) {
    s = std::min((int)ATTN_MAX_SPLITS, slots / ntasks);
  } else if (ntasks > slots) {
    const auto fill = [&](int k) {  // how full the waves of k splits a task are
      const int64_t blocks = (int64_t)ntasks * k, waves = (blocks + slots - 1) / slots;
      return (double)blocks / ((double)waves * slots);
    };
    int best = 1;
    for (s = 1; s <= ATTN_MAX_SPLITS && fill(s) < 0.9; s++)
      if (fill(s) > fill(best)) best = s;
    if (s > ATTN_MAX_SPLITS) s = best;
  }
  *splits = std::min(most, s);
  return cudaSuccess;
}

cudaError_t AttentionFits(int g, int d, SkvSmemFit* fit) {
  if (flash_for(d, g).launch) return cudaSuccess;  // fixed shared memory per (d, g), in every build's tests
  return skv_smem_fit(TileDecodeKernel, tile_smem_bytes(g, d), "decode attention", fit);
}

cudaError_t Attention(const SkvAttnTask* tasks, const SkvAttnTask& one, int ntasks, int max_splits, int g, int d,
                      float scale, int kv_dtype, void* ws, cudaStream_t stream, bool settled, SkvLanded landed) {
  if (ntasks <= 0 || g <= 0 || d <= 0) return cudaSuccess;
  if (ntasks > 0x7fffffff || max_splits > ATTN_MAX_SPLITS) return cudaErrorInvalidValue;
  const dim3 grid((unsigned)ntasks, (unsigned)max_splits);
  float* part = static_cast<float*>(ws);
  int32_t* arrivals = AttentionArrivals(ws, ntasks, max_splits, g, d);
  const FlashKernel flash = flash_for(d, g);
  if (flash.launch) return flash.launch(TaskList{tasks, one, settled, landed}, grid, scale, kv_dtype, part, max_splits, arrivals, stream);
  const size_t smem = tile_smem_bytes(g, d);
  SKV_CUDA_CALL(skv_smem_optin(TileDecodeKernel, smem));
  return skv_launch(TileDecodeKernel, grid, ATTN_THREADS, smem, stream, tasks, one, g, d, scale, kv_dtype, part, max_splits, arrivals);
}

cudaError_t AttentionLandedFallbacks(int64_t* n) {
  unsigned long long v = 0;
  SKV_CUDA_CALL(cudaMemcpyFromSymbol(&v, landed_fallbacks, sizeof v));
  *n = (int64_t)v;
  v = 0;
  return cudaMemcpyToSymbol(landed_fallbacks, &v, sizeof v);
}

cudaError_t AttentionDenseFits(int g, int d, int kv_dtype, bool* fits) {
  *fits = false;
  const FlashKernel flash = flash_for(d, g);
  if (!flash.dense) return cudaSuccess;
  int list = 0, dense = 0;
  SKV_CUDA_CALL(flash.slots(kv_dtype, &list));
  SKV_CUDA_CALL(flash.dense_slots(kv_dtype, &dense));
  *fits = dense == list;
  return cudaSuccess;
}

cudaError_t AttentionDense(const SkvStep& s, const SkvStepRow* rows, const SkvStepIo* io, int max_splits, void* ws,
                           cudaStream_t stream) {
  const int ntasks = s.batch * s.kv_heads, g = s.kv_heads > 0 ? s.q_heads / s.kv_heads : 0;
  const FlashKernel flash = flash_for(s.d, g);
  if (ntasks <= 0 || !flash.dense || max_splits > ATTN_MAX_SPLITS) return cudaErrorInvalidValue;
  float* part = static_cast<float*>(ws);
  int32_t* arrivals = AttentionArrivals(ws, ntasks, max_splits, g, s.d);
  return flash.dense(DenseSteps{s, rows, io}, dim3((unsigned)ntasks, (unsigned)max_splits), s.scale, s.kv_dtype, part, max_splits,
                     arrivals, stream);
}

size_t SparseAttentionWorkspace(int g, int d, int64_t total) {
  return AttentionWorkspace(1, attn_max_splits(total), g > 0 ? g : 0, d > 0 ? d : 0);
}

cudaError_t SparseAttention(const float* q, int g, int d, float scale, const SkvSegment* segs, int nseg,
                            int64_t total, int kv_dtype, int tasks, float* out, SkvWorkspace ws, cudaStream_t stream) {
  if (g <= 0 || d <= 0) return cudaSuccess;
  if (total <= 0 || nseg <= 0) return cudaMemsetAsync(out, 0, sizeof(float) * (size_t)g * d, stream);  // no keys: zeros
  if (ws.bytes < SparseAttentionWorkspace(g, d, total) || tasks < 1) return cudaErrorInvalidValue;
  int splits = 0;
  SKV_CUDA_CALL(AttentionSplits(tasks, total, g, d, kv_dtype, &splits));
  SKV_CUDA_CALL(cudaMemsetAsync(AttentionArrivals(ws.ptr, 1, splits, g, d), 0, sizeof(int32_t), stream));
  const SkvAttnTask one{q, segs, total, out, nullptr, nseg, SKV_F32};
  return Attention(nullptr, one, 1, splits, g, d, scale, kv_dtype, ws.ptr, stream);
}
