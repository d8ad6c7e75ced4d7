// shadowkv CUDA kernels: the launcher of every op, one per kernels/<op>.cu (flashinfer style: each
// picks grid, block and shared memory, launches on the caller's stream and returns cudaError_t).
// Plain C++ over the CUDA runtime API, so runtime/cuda/*.cc include it without device code.
// Arguments mirror runtime/wasm/abi.h op by op; pointers are device addresses (host-tier pages
// are mapped pinned memory, addressed through UVA).
#pragma once
#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Storage dtypes; arithmetic is f32. NOTE: must match runtime/wasm/abi.h (skv_dtype) and
// DTYPE_CODE in packages/shadowkv-cuda/src/AddonTypes.ts.
enum SkvDtype { SKV_F32 = 0, SKV_F16 = 1, SKV_BF16 = 2 };
// Bytes of an element (constexpr: device code calls it too, --expt-relaxed-constexpr).
constexpr size_t skv_dtype_size(int dtype) { return dtype == SKV_F32 ? 4 : 2; }
// Carves `bytes` from a block at offset `at` (advanced past them, rounded up to 256), returning
// where they start: every buffer of a workspace starts aligned.
static inline size_t skv_carve(size_t& at, size_t bytes) {
  const size_t start = at;
  at = (at + bytes + 255) / 256 * 256;
  return start;
}
// Whether the environment turns a default-on switch off: `name` set to "0" (SHADOWKV_CUDA_PDL,
// _GRAPHS, _FETCH_SPLIT, _SELECT_NEAR, _APPEND_FOLD, _DENSE, _IDLE_UPLOAD).
static inline bool skv_env_off(const char* name) {
  const char* v = getenv(name);
  return v && strcmp(v, "0") == 0;
}
// RoPE pairing: HALF = rotate-half (dims i, i+d/2), INTERLEAVED = (2i, 2i+1). NOTE: matches skv_rope_style.
enum SkvRopeStyle { SKV_ROPE_HALF = 0, SKV_ROPE_INTERLEAVED = 1 };

// One run of keys and values for attention (device table entry): n rows of d, row stride ld.
// NOTE: 24 bytes, written by CudaDevice.sparseAttention as six u32 words (k lo/hi, v lo/hi, n, ld).
struct SkvSegment {
  uint64_t k;
  uint64_t v;
  int32_t n;
  int32_t ld;
};
static_assert(sizeof(SkvSegment) == 24, "SkvSegment is six 32-bit words");

// A launch whose shared memory grows with the model's shapes, against the device's limit (SpecFits).
struct SkvSmemFit {
  const char* kernel;  // null: every such launch fits
  size_t need, limit;  // what a block of it needs (static and dynamic) and the most a block may have
};

// Device memory an op may use for its temporaries; grown by the caller (runtime/cuda/memory.cc).
struct SkvWorkspace {
  void* ptr;
  size_t bytes;
};

// ---- convert.cu ----
// dst[i] = src[i] converted (round to nearest even), n elements.
cudaError_t Convert(const void* src, int src_dtype, void* dst, int dst_dtype, int64_t n, cudaStream_t stream);

// ---- pre_rope_keys.cu ----
// The pre-RoPE keys of `heads` heads (runtime/wasm/abi.h skv_pre_rope_keys): head h's rows of d
// (dtype, row stride d) at src + h * head_stride elements, post-RoPE at positions first + r, to f32
// columns [h * d, (h + 1) * d) of dst (row stride ld) with RoPE undone. d even.
cudaError_t PreRopeKeys(const void* src, int dtype, int64_t head_stride, int heads, int rows, int d, float* dst, int64_t ld,
                        const double* inv_freq, int style, int first, cudaStream_t stream);

// ---- copy_words.cu ----
// `bytes` (a multiple of 4) from src to dst, both 16-byte aligned, either in device memory or pinned
// host memory (through UVA), by a kernel on `stream`: not behind the copy engines' queue.
cudaError_t CopyWords(void* dst, const void* src, size_t bytes, cudaStream_t stream);

// ---- convert_rows.cu ----
// rows x cols: dst[r*dst_ld + c] = convert(src[r*src_ld + c]).
cudaError_t ConvertRows(const void* src, int src_dtype, int64_t src_ld, void* dst, int dst_dtype, int64_t dst_ld,
                        int rows, int cols, cudaStream_t stream);

// ---- gemm.cu ----
// C[M x N] (f32) = alpha * op(A) * op(B) + beta * C; beta = 0 ignores C. op(A)(i, k) =
// transA ? A[k*lda + i] : A[row(i)*lda + k], row(i) = a_rows ? a_rows[i] : i; op(B)(k, j) =
// transB ? B[j*ldb + k] : B[k*ldb + j]. f32 arithmetic, except that f32 products of at least 2^30
// multiply-adds with transB = 0 run on the tensor cores in split bf16 (~2^-16 relative per product).
cudaError_t Gemm(int M, int N, int K, float alpha, const void* A, int a_dtype, int64_t lda, int transA,
                 const int32_t* a_rows, const void* B, int b_dtype, int64_t ldb, int transB, float beta, float* C,
                 int64_t ldc, cudaStream_t stream);

// ---- gram.cu ----
// G [D x D] (f32, row stride D) = K^T K, K [S x D] f32 (row stride ldk). From 2^30 multiply-adds on
// the tensor cores in split bf16 (~2^-16 relative per product, f32 sums; deterministic on one GPU,
// exactly symmetric), below that Gemm's f32. Workspace: GramWorkspace(S, D) bytes (0 below the
// threshold; the slices' partial tiles, 26 MB on an H200 at S = 128K, D = 1024).
size_t GramWorkspace(int S, int D);
cudaError_t Gram(const float* K, int S, int D, int64_t ldk, float* G, SkvWorkspace ws, cudaStream_t stream);

// ---- rope.cu ----
// Rotates `rows` rows of x (f32, row stride ldx) in place; row r at positions[r]; float64 angles.
cudaError_t Rope(float* x, int rows, int d, int64_t ldx, const int32_t* positions, const double* inv_freq, int style,
                 int direction, cudaStream_t stream);

// ---- low_rank_keys.cu ----
// Status of LowRankKeys beyond its cudaError_t. NOTE: the values match skv_status (runtime/wasm/abi.h).
enum SkvLowRankStatus { SKV_LOW_RANK_OK = 0, SKV_LOW_RANK_ALLOC = 1, SKV_LOW_RANK_ARG = 2 };
// The factorization of runtime/wasm/low_rank_keys.cc: Gram matrix, scaling and U = K proj on the
// device; randomized subspace iteration (same splitmix64 Omega) with its orthonormalization
// (CholeskyQR2, else the host's Gram-Schmidt) and Rayleigh-Ritz products on the device in float64,
// the small eigensolve (symmetric_eigen.h) split: reduction and QL iteration on the host,
// eigenvectors on the device (eigenvectors.cuh). K is scaled in place and restored.
// Synchronous (it reads small matrices back); *status says ARG like skv_low_rank_keys.
// ws: LowRankKeysWorkspace bytes of device memory (G, the subspace, the Gram's slices: ~30 MB at
// S = 128K, D = 1024); pinned: LowRankKeysPinned bytes of pinned host memory (the small matrices
// going to and from the host, ~1.3 MB), both the caller's again when it returns.
// Both are 0 for sizes the factorization refuses.
size_t LowRankKeysWorkspace(int S, int D, int rank, int oversample, int power_iters);
size_t LowRankKeysPinned(int S, int D, int rank, int oversample, int power_iters);
cudaError_t LowRankKeys(float* K, int S, int D, int rank, int oversample, int power_iters, uint32_t seed, float* U,
                        float* SV, float* proj, float* sigma, SkvWorkspace ws, SkvWorkspace pinned, int* status,
                        cudaStream_t stream);

// ---- landmarks.cu ----
// keys: n_chunks*C rows of d (dtype, row stride ldk); landmarks [n_chunks x d] f32 = chunk means;
// min_cos[c] = min over the chunk's rows k of dot(L, k) / max(|L||k|, 1e-30).
cudaError_t Landmarks(const void* keys, int dtype, int64_t ldk, int n_chunks, int C, int d, float* landmarks,
                      float* min_cos, cudaStream_t stream);

// ---- keep_landmarks.cu ----
// The landmark set after the outliers are chosen (runtime/wasm/abi.h skv_keep_landmarks): head h's
// chunks but its counts[h] outliers (ascending, at outliers + h * max_outliers), in order, to rows
// h * capacity + j of `out` (dtype) with their ids; ids past the head's landmarks are 0. All device
// pointers; the caller checks the lists.
cudaError_t KeepLandmarks(const float* landmarks, int heads, int n_chunks, int d, const int32_t* outliers, const int32_t* counts,
                          int max_outliers, void* out, int dtype, int32_t* ids, int capacity, cudaStream_t stream);

// ---- landmark_bounds.cu ----
// Each head's landmark bound from scratch: the f32 bits of max |L| over head h's first
// head_counts[h * SKV_HEAD_FIELDS] rows of landmarks [heads x capacity x d] (dtype) into
// head_counts[heads * SKV_HEAD_FIELDS + h] (the store's bound words, SkvHeadField). Device pointers.
cudaError_t LandmarkBounds(const void* landmarks, int dtype, int heads, int capacity, int d, int32_t* head_counts, cudaStream_t stream);

// ---- select_chunks.cu ----
// Top-k of each of `rows` rows of scores[n] (row r at scores + r * n; largest: highest first), ties
// to the lower index, NaN last. Writes row r's min(k, n) chosen indices, ascending, to
// out + r * min(k, n) (device); count[r] (device ints) gets how many. Workspace: none (one block a
// row, shared memory only).
cudaError_t SelectChunks(const float* scores, int n, int k, int largest, int rows, int32_t* out, int32_t* count,
                         cudaStream_t stream);

// ---- score_chunks.cu ----
// scores[c] = max_j softmax_c(scale * q_j . landmarks[c]); q [g x d] f32, landmarks [n x d] (dtype).
// work: g*n floats (the logits); maxes: 64*g floats (per-block maxima) (device).
cudaError_t ScoreChunks(const float* q, int g, int d, float scale, const void* landmarks, int dtype, int n,
                        float* scores, float* work, float* maxes, cudaStream_t stream);

// ---- rebuild_keys.cu ----
// out row (slots ? slots[i] : i)*C + t = RoPE_pos(U[pos, 0:rank] . SVh), pos = chunk_ids[i]*C + t.
cudaError_t RebuildKeys(const void* U, int u_dtype, int rank, const void* SVh, int sv_dtype, int64_t ldsv, int d,
                        const int32_t* chunk_ids, const int32_t* out_slots, int n_chunks, int C, const double* inv_freq,
                        int style, void* out, int out_dtype, int64_t ldo, cudaStream_t stream);

// ---- gather_values.cu ----
// Copies n chunks of `block` elements from a paged tier (device table of page addresses) into dst:
// chunk ids[i] of head h lives in page (ids[i] / page_chunks) * heads + h at element offset
// (ids[i] % page_chunks) * block and goes to dst + (slots ? slots[i] : i) * block. One chunk per block.
// fp8_rows: 0 where the pages hold dtype; C where they hold fp8 chunks of C rows (fp8.h:
// fp8_chunk_bytes(C, block / C) bytes each), dequantized to dtype. bases: null, or the device bytes
// of a packed tier's bases (pack.h: bf16, pack_index order), each chunk unpacked.
cudaError_t GatherValues(const uint64_t* pages, int page_chunks, int heads, int h, const int32_t* ids,
                         const int32_t* slots, int n, int block, int dtype, int fp8_rows, const uint8_t* bases, void* dst,
                         cudaStream_t stream);

// ---- quantize_values.cu ----
// chunks x C rows of d values (dtype, contiguous) into fp8 chunks (fp8.h), chunk-contiguous in dst.
cudaError_t QuantizeValues(const void* src, int dtype, int chunks, int C, int d, void* dst, cudaStream_t stream);

// ---- pack_values.cu ----
// chunks x n bf16 values into packed chunks (pack.h): chunk c to dst + 2n c bytes, its base to bases[c].
cudaError_t PackValues(const void* src, int chunks, int n, void* dst, uint8_t* bases, cudaStream_t stream);

// ---- sparse_attention.cu ----
// Exact softmax attention of g query heads q [g x d] (f32) over the union of nseg segments (device
// table; keys and values of kv_dtype), split over blocks of keys and merged; out [g x d] f32.
// total = sum of the segments' n (the caller knows it). tasks >= 1: how many such attentions the
// caller's step makes (the keys are split as a launch of that many would split them, attention.h:
// the fused step's bits). Workspace: SparseAttentionWorkspace bytes.
size_t SparseAttentionWorkspace(int g, int d, int64_t total);
cudaError_t SparseAttention(const float* q, int g, int d, float scale, const SkvSegment* segs, int nseg,
                            int64_t total, int kv_dtype, int tasks, float* out, SkvWorkspace ws, cudaStream_t stream);

// ---- causal_attention.cu ----
// q [g x Sq x d] f32; query row i at position offset + i sees key rows [0, offset + i];
// k, v rows of d (kv_dtype); out [g x Sq x d] f32.
cudaError_t CausalAttention(const float* q, int g, int Sq, int d, float scale, int offset, const void* k,
                            const void* v, int kv_dtype, float* out, cudaStream_t stream);

// ---- decode_layer.cu ----
// Slots of a layer's f64 counters. NOTE: must match COUNTER in packages/shadowkv/src/backends/LayerStep.ts.
enum SkvCounter {
  SKV_STEPS_COUNTER = 0, SKV_HITS_COUNTER, SKV_MISSES_COUNTER, SKV_SELECTED_TOKENS_COUNTER, SKV_ATTENDED_TOKENS_COUNTER,
  SKV_HEADS_COUNTER, SKV_COMPACTIONS_COUNTER, SKV_HOT_HITS_COUNTER, SKV_LAST_HITS_COUNTER, SKV_LAST_MISSES_COUNTER,
  SKV_LAST_SELECTED_TOKENS_COUNTER, SKV_LAST_ATTENDED_TOKENS_COUNTER, SKV_LAST_HEADS_COUNTER, SKV_LAST_HOT_HITS_COUNTER,
  SKV_COUNTERS
};
// Fields per kv head of a store's head counts (i32). NOTE: matches HEAD_FIELD in LayerStep.ts. The
// counts [Hkv][SKV_HEAD_FIELDS] are followed by a bound word a head: the f32 bits of max |L| over
// its landmarks, kept by the CUDA runtime where landmarks are written (LandmarkBounds, the step's
// compaction) and read by the step's tensor-core logits (logits_mma.cuh).
enum SkvHeadField { SKV_HEAD_LANDMARKS = 0, SKV_HEAD_OUTLIERS = 1, SKV_HEAD_SELECTED = 2, SKV_HEAD_FIELDS = 3 };

// One batch row of a layer step (runtime/wasm/abi.h skv_row, with 64-bit addresses first).
// NOTE: 184 bytes, written by CudaDevice.decodeLayer (ROW_BYTES); the field order is the contract.
struct SkvStepRow {
  uint64_t tail_k, tail_v;    // [Hkv][tail_capacity][d] post-RoPE keys / values
  uint64_t u, sv, proj;       // the store (u = 0: a dense row): [chunk_capacity*C][rank], [rank][Hkv*d], [Hkv*d][rank]
  uint64_t landmarks;         // [Hkv][chunk_capacity][d]
  uint64_t landmark_ids;      // i32 [Hkv][chunk_capacity], ascending
  uint64_t head_counts;       // i32 [Hkv][SKV_HEAD_FIELDS], then the bound words i32 [Hkv] (SkvHeadField)
  uint64_t outlier_k, outlier_v;    // [Hkv][max_outliers][C*d]
  uint64_t selected_k, selected_v;  // [Hkv][max_selected][C*d], one chunk per slot
  uint64_t selected_ids;      // i32 [Hkv][max_selected]
  uint64_t value_pages;       // u64 table: page (c / page_chunks) * Hkv + h holds head h's chunks (host tier)
  uint64_t hot_ids, hot_v;    // the hot-value cache: i32 [Hkv][hot_slots] chunk id per slot (-1 empty), [Hkv][hot_slots][C*d]
  uint64_t value_bases;       // 0, or u8: the packed tier's bases (runtime/wasm/pack.h, pack_index order)
  int32_t input;              // index in q/k/v/out, or -1: the row sits this step out
  int32_t position;           // absolute position of the new token
  int32_t tail_count, tail_capacity;
  int32_t store_tokens, rank, chunk_capacity;
  int32_t compact;            // 1: after attending, whole tail chunks beyond local_tokens join the store
  int32_t page_chunks;
  int32_t hot_slots;          // 0: no hot-value cache; chunk c may sit only in slot c % hot_slots
  int32_t fp8_rows;           // 0: the pages hold the storage dtype; C: fp8 chunks (fp8.h)
  int32_t reserved;
};
static_assert(sizeof(SkvStepRow) == 184, "SkvStepRow is 184 bytes");

// One decode step of one layer (runtime/wasm/abi.h skv_layer_step); `rows` follow it in the record.
// NOTE: 112 bytes (STEP_BYTES in AddonTypes.ts).
struct SkvStep {
  uint64_t inv_freq;  // f64 [d/2]
  uint64_t q, k, v;   // [inputs][H][d] of io_dtype, pre-RoPE
  uint64_t out;       // [inputs][Hq][d] of io_dtype
  uint64_t counters;  // f64 [SKV_COUNTERS]
  int32_t batch, q_heads, kv_heads, d, C, max_selected, max_outliers, local_tokens, kv_dtype, io_dtype, rope_style;
  float scale, score_scale;
  int32_t logit_split;  // landmark-logit blocks per kv head; 0: a cost model's choice (tests force others)
  // Blocks per kv head that score and select (a cluster, sm_90+, at most 8); 0: the default (8
  // where every task's cluster runs at once by the driver's count, else 4, else 1), 1: one block
  // after the scores (the path of devices without clusters).
  int32_t select_blocks;
  // Row groups of a pipelined step (kernels/decode_layer.cu pipelined_groups); 0: the default by rows.
  int32_t step_groups;
};
static_assert(sizeof(SkvStep) == 112, "SkvStep is 112 bytes");

// The step's inputs and output (SkvStep's q, k, v and out) where the kernels read them: in device
// memory beside the rows, not in the launch's arguments, so that a step's CUDA graph serves every
// step of the same plan wherever the host loop keeps its tensors (kernels/decode_layer.cu StepGraphs).
struct SkvStepIo {
  uint64_t q, k, v, out;
};

// Whether the step is well formed (runtime/wasm/decode_layer.cc valid_step, on what the host
// knows: the per-head counts live on the device and only the runtime writes them).
bool DecodeLayerValid(const SkvStep& s, const SkvStepRow* rows);
// Whether a model of q_heads query heads, kv_heads kv heads and head dim d runs on the current
// device: the launches whose shared memory grows with those (the decode step's append, the decode
// attention, the causal prefill attention) against the most a block may have. fit->kernel names
// the first that does not fit (null where all do). NOTE: every other launch's shared memory is
// fixed, or bounded by a size it falls back to global memory past (the select's lists and scores,
// the rebuild's rank tile).
cudaError_t SpecFits(int q_heads, int kv_heads, int d, SkvSmemFit* fit);
// Device bytes of the step's workspace (temporaries, attention partials, compaction).
size_t DecodeLayerWorkspace(const SkvStep& s, const SkvStepRow* rows);
// Decode steps 1-5 and compaction for every row (the contract of skv_decode_layer), as a few
// kernels on `stream` and no host synchronization. host_rows: the rows, as the host has them;
// device_rows: the same rows in device memory, there (in `stream`'s order) before the first kernel
// and unchanged until the last; device_io: the step's q, k, v and out, in device memory as the rows
// are (the kernels read these, never s's); ws: DecodeLayerWorkspace bytes.
cudaError_t DecodeLayer(const SkvStep& s, const SkvStepRow* host_rows, const SkvStepRow* device_rows, const SkvStepIo* device_io,
                        SkvWorkspace ws, cudaStream_t stream);
// The step profile (benchmarks): while on, every DecodeLayer records an event between its stages.
// Returns the GPU milliseconds per stage summed over the steps recorded since the last call (waits
// for them), their count, how the steps since the last call were launched and the latest one's
// plan, then turns recording on or off.
enum SkvStepStage { SKV_STAGE_APPEND = 0, SKV_STAGE_LOGITS, SKV_STAGE_SELECT, SKV_STAGE_FETCH, SKV_STAGE_ATTENTION,
                    SKV_STAGE_COMPACT, SKV_STEP_STAGES };
struct SkvStepLaunches {
  int64_t replayed, captured, one_by_one;  // steps replayed from a graph, captured into one, launched kernel by kernel
  int64_t landed_fallbacks;                // attention blocks whose task's landed count never came (none, unless a bug)
  int graphs_broken;                       // a capture failed: every later step goes one by one
  // The latest sparse step's plan: logit blocks a task, the select's cluster (0: the one-block path),
  // row groups, whether the fetch is split and its value blocks, the select's slices in shared
  // memory, StepAppend folded into the logits, the attention waiting for each task's own misses.
  int logit_split, select_blocks, row_groups, split_fetch, value_grid, near, fold, landed;
};
cudaError_t DecodeLayerProfile(bool on, double* ms, int* steps, SkvStepLaunches* launches);

// ---- probe (convert.cu) ----
// A trivial kernel, run once by the probe: fails with cudaErrorNoKernelImageForDevice (209) when
// the binary has no code for the GPU.
cudaError_t SelfTest(cudaStream_t stream);

// ---- check_finite.cu ----
// *first = min(*first, the flat index of the first of n elements of x that is NaN, infinite or
// above `limit` in magnitude); the caller sets *first to UINT64_MAX before. Queued, no wait.
cudaError_t CheckFinite(const void* x, int dtype, int64_t n, float limit, unsigned long long* first, cudaStream_t stream);
