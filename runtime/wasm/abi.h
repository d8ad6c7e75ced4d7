// shadowkv wasm runtime: the plain C ABI of the reference ops.
// Every entry point is `extern "C"`, takes plain integers, f32/f64 scalars and pointers into the
// module's heap, and allocates nothing that outlives the call unless it says so.
// NOTE: the enums below must match packages/shadowkv/src/backends/wasm/abi.ts.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __EMSCRIPTEN__
#include <emscripten/emscripten.h>
#define SKV_EXPORT extern "C" EMSCRIPTEN_KEEPALIVE
#else
#define SKV_EXPORT extern "C"
#endif

// Storage dtypes. Arithmetic is always f32.
enum skv_dtype { SKV_F32 = 0, SKV_F16 = 1, SKV_BF16 = 2 };
// RoPE pairing: HALF = rotate-half (dims i, i+d/2), INTERLEAVED = (2i, 2i+1).
enum skv_rope_style { SKV_ROPE_HALF = 0, SKV_ROPE_INTERLEAVED = 1 };
// Return codes of the ops that can fail.
enum skv_status { SKV_OK = 0, SKV_ERR_ALLOC = 1, SKV_ERR_ARG = 2 };

// One run of keys and values for attention: n rows of d elements, row stride ld (elements).
// In wasm32 this is 4 x i32 (16 bytes); TS writes it as an Int32Array.
struct skv_segment {
  const void* k;
  const void* v;
  int32_t n;
  int32_t ld;
};

// ---- memory (memory.cc) ----
SKV_EXPORT void* skv_malloc(size_t bytes);  // 16-byte aligned; null on failure
SKV_EXPORT void skv_free(void* p);
// Heap allocations the runtime has made so far: skv_malloc, and every allocation an op makes for
// itself (scratch that did not fit the reusable arena, arena growth, factorization workspaces).
// Tests read it to show that steady-state decode allocates nothing.
SKV_EXPORT double skv_alloc_count(void);
// Recovery after a trap inside any op: the trap skipped the destructors of the scratch that was
// live, so this marks the scratch arena empty again. Heap blocks that scratch held are leaked. The
// caller also restores the stack pointer (stackSave / stackRestore). Returns SKV_ERR_ALLOC when the
// trap was an allocation the heap could not give (skv_trap_out_of_memory), SKV_OK for any other
// trap (an out-of-bounds access, unreachable code: a bug, not a full heap).
SKV_EXPORT int skv_scratch_reset(void);

// ---- convert.cc ----
// dst[i] = src[i] converted (round to nearest even), n elements.
SKV_EXPORT void skv_convert(const void* src, int src_dtype, void* dst, int dst_dtype, int n);

// ---- gemm.cc ----
// C[M x N] = alpha * op(A)[M x K] * op(B)[K x N] + beta * C  (f32 accumulate; beta = 0 ignores C).
// op(A)(i, k) = transA ? A[k*lda + i] : A[row(i)*lda + k], row(i) = a_rows ? a_rows[i] : i.
// op(B)(k, j) = transB ? B[j*ldb + k] : B[k*ldb + j].
SKV_EXPORT void skv_gemm(int M, int N, int K, float alpha,
                         const void* A, int a_dtype, int lda, int transA, const int32_t* a_rows,
                         const void* B, int b_dtype, int ldb, int transB,
                         float beta, float* C, int ldc);

// ---- rope.cc ----
// Rotates `rows` rows of x (f32, row stride ldx) in place; row r sits at positions[r].
// inv_freq has d/2 float64 entries; angles are pos * inv_freq[i] in float64.
// direction = +1 applies RoPE, -1 undoes it.
SKV_EXPORT void skv_rope(float* x, int rows, int d, int ldx, const int32_t* positions,
                         const double* inv_freq, int style, int direction);

// ---- low_rank_keys.cc ----
// Truncated factorization of K [S x D] (f32, row-major; pre-RoPE keys, heads concatenated):
//   U [S x rank], SV [rank x D] = Sigma V^T, proj [D x rank] = V Sigma^-1 (0 where sigma <= 1e-6 sigma_1),
//   sigma [rank] descending.  Requires rank <= min(S, D).
// Method: K scaled by a power of two to max|K| in [0.5, 1) (so that K^T K cannot overflow or
// underflow f32 for any finite keys), Gram matrix G = K^T K, randomized subspace iteration on G
// (rank + oversample columns, power_iters iterations, deterministic from seed), Rayleigh-Ritz
// eigensolve, U = K proj; sigma, SV and proj are scaled back. The scaling is exact, so where the
// unscaled computation stays finite the result is the same bit for bit. (sigma_1 can reach
// sqrt(S) max|K|, so f32 sigma and SV still overflow for keys near FLT_MAX.)
// NOTE: K is scaled in place (the caller's K is a temporary) and scaled back before returning,
// bit for bit unless entries below ~2^-125 max|K| lose bits as subnormals.
// Returns SKV_OK; SKV_ERR_ARG for bad sizes or a NaN / infinite key (nothing written);
// SKV_ERR_ALLOC when the workspace (4 D^2 + 24 (rank + oversample) D bytes, about) does not fit
// the heap or a 32-bit size (nothing written).
SKV_EXPORT int skv_low_rank_keys(float* K, int S, int D, int rank, int oversample,
                                 int power_iters, uint32_t seed,
                                 float* U, float* SV, float* proj, float* sigma);

// ---- landmarks.cc ----
// keys: n_chunks*C rows of d (storage dtype, row stride ldk), one kv head, post-RoPE.
// landmarks[c] = mean of chunk c's rows (f32 [n_chunks x d]);
// min_cos[c] = min over the chunk's rows k of dot(L, k) / max(|L||k|, 1e-30).
SKV_EXPORT void skv_landmarks(const void* keys, int dtype, int ldk, int n_chunks, int C, int d,
                              float* landmarks, float* min_cos);

// ---- keep_landmarks.cc ----
// The landmark set of `heads` heads after their outliers are chosen: head h's landmarks are rows
// [h * n_chunks, (h + 1) * n_chunks) of `landmarks` (f32, d each), its outliers the counts[h]
// ascending chunk ids at outliers[h * max_outliers]. Every other chunk c, in order, is landmark j of
// the head: row h * capacity + j of `out` (dtype) and ids[h * capacity + j] = c; the ids past the
// head's n_chunks - counts[h] landmarks, up to capacity, are 0. The caller checks the lists
// (ascending, within [0, n_chunks), counts[h] <= max_outliers, n_chunks - counts[h] <= capacity).
SKV_EXPORT void skv_keep_landmarks(const float* landmarks, int heads, int n_chunks, int d, const int32_t* outliers,
                                   const int32_t* counts, int max_outliers, void* out, int dtype, int32_t* ids, int capacity);

// ---- select_chunks.cc ----
// Top-k of scores[n] (largest = 1: highest first; 0: lowest). Writes min(k, n) indices to out,
// ascending. NOTE: ties go to the lower index so that every runtime selects the same set.
// Returns the count written.
SKV_EXPORT int skv_select_chunks(const float* scores, int n, int k, int largest, int32_t* out);

// ---- score_chunks.cc ----
// q: g query heads [g x d] f32 (post-RoPE) of one kv group; landmarks [n x d] (dtype, row stride d).
// scores[c] = max_j softmax_c(scale * q_j . landmarks[c]).  work: scratch of g*n floats (or null).
SKV_EXPORT void skv_score_chunks(const float* q, int g, int d, float scale,
                                 const void* landmarks, int dtype, int n,
                                 float* scores, float* work);

// ---- rebuild_keys.cc ----
// For chunk i < n_chunks and t < C, with pos = chunk_ids[i]*C + t:
//   out row (out_slots ? out_slots[i] : i)*C + t = RoPE_pos( U[pos, 0:rank] . SVh )
// U: rows of `rank` elements (u_dtype); SVh: [rank x d], row stride ldsv (sv_dtype), i.e. SV + head*d.
// out: rows of d, row stride ldo, out_dtype.
SKV_EXPORT void skv_rebuild_keys(const void* U, int u_dtype, int rank,
                                 const void* SVh, int sv_dtype, int ldsv, int d,
                                 const int32_t* chunk_ids, const int32_t* out_slots, int n_chunks, int C,
                                 const double* inv_freq, int style,
                                 void* out, int out_dtype, int ldo);

// ---- sparse_attention.cc ----
// Exact softmax attention of g query heads q [g x d] (f32) over the union of nseg segments
// (keys and values of kv_dtype), online softmax; out [g x d] f32. Empty union -> zeros.
SKV_EXPORT void skv_sparse_attention(const float* q, int g, int d, float scale,
                                     const skv_segment* segs, int nseg, int kv_dtype, float* out);

// ---- causal_attention.cc ----
// Prefill attention for one kv head's group: q [g x Sq x d] f32 (query head stride Sq*d),
// query row i sits at position offset + i and attends to key rows [0, offset + i].
// k, v: rows of d (kv_dtype, row stride d); out [g x Sq x d] f32.
SKV_EXPORT void skv_causal_attention(const float* q, int g, int Sq, int d, float scale, int offset,
                                     const void* k, const void* v, int kv_dtype, float* out);

// ---- pre_rope_keys.cc ----
// The pre-RoPE keys of `heads` heads: head h's `rows` rows of d (dtype, row stride d) at
// src + h * head_stride elements, post-RoPE at positions first, first + 1, ..., to f32 columns
// [h * d, (h + 1) * d) of dst (row stride ld) with RoPE undone: skv_convert_rows then skv_rope
// (direction -1) a head at a time.
SKV_EXPORT void skv_pre_rope_keys(const void* src, int dtype, int head_stride, int heads, int rows, int d, float* dst,
                                  int ld, const double* inv_freq, int style, int first);

// ---- convert_rows.cc ----
// rows x cols elements: dst[r*dst_ld + c] = convert(src[r*src_ld + c]); a strided skv_convert
// (e.g. head h's rows [t x d] into column block h*d of a [t x Hkv*d] matrix).
SKV_EXPORT void skv_convert_rows(const void* src, int src_dtype, int src_ld, void* dst, int dst_dtype,
                                 int dst_ld, int rows, int cols);

// ---- gather_values.cc ----
// Copies n chunks of `block` elements (dtype) from a paged tier into dst: chunk ids[i] of head h
// lives in page (ids[i] / page_chunks) * heads + h at chunk offset ids[i] % page_chunks, and goes to
// dst + (slots ? slots[i] : i) * block elements. fp8_rows: 0 where the tier holds the dtype; C where
// it holds fp8 chunks of C rows (fp8.h: fp8_chunk_bytes(C, block / C) bytes each), dequantized.
// bases: null, or the packed tier's bases (pack.h; bf16, pack_index order), each chunk unpacked.
SKV_EXPORT void skv_gather_values(void* const* pages, int page_chunks, int heads, int h,
                                  const int32_t* ids, const int32_t* slots, int n, int block, int dtype,
                                  int fp8_rows, const uint8_t* bases, void* dst);

// ---- quantize_values.cc ----
// chunks x C rows of d values (dtype, contiguous) into fp8 chunks (fp8.h), chunk-contiguous in dst.
SKV_EXPORT void skv_quantize_values(const void* src, int dtype, int chunks, int C, int d, void* dst);

// ---- pack_values.cc ----
// chunks x n bf16 values into packed chunks (pack.h): chunk c to dst + 2n c bytes, its base to bases[c].
SKV_EXPORT void skv_pack_values(const void* src, int chunks, int n, void* dst, uint8_t* bases);

// ---- decode_layer.cc ----
// Counters a layer step accumulates (float64, so totals never wrap). The LAST_* slots are
// overwritten by each step. NOTE: must match SKV_COUNTER in backends/wasm/abi.ts.
// HOT_HITS: misses copied from the hot-value cache instead of fetched from the host.
enum skv_counter {
  SKV_STEPS = 0, SKV_HITS, SKV_MISSES, SKV_SELECTED_TOKENS, SKV_ATTENDED_TOKENS, SKV_HEADS, SKV_COMPACTIONS, SKV_HOT_HITS,
  SKV_LAST_HITS, SKV_LAST_MISSES, SKV_LAST_SELECTED_TOKENS, SKV_LAST_ATTENDED_TOKENS, SKV_LAST_HEADS, SKV_LAST_HOT_HITS,
  SKV_COUNTERS
};
// head_counts[h * SKV_HEAD_FIELDS + field]
enum skv_head_field { SKV_HEAD_LANDMARKS = 0, SKV_HEAD_OUTLIERS = 1, SKV_HEAD_SELECTED = 2, SKV_HEAD_FIELDS = 3 };

// One batch row of a layer step. Every field is 4 bytes in wasm32 (TS writes it as an Int32Array,
// SKV_ROW_WORDS words per row, in this order). Buffers are in the storage dtype unless said.
struct skv_row {
  int32_t input;           // this row's index in q/k/v/out, or -1: the row sits this step out
  int32_t position;        // absolute position of the new token (= tokens stored before it)
  int32_t tail_count;      // exact rows per head before the append
  int32_t tail_capacity;   // rows per head in tail_k / tail_v (> tail_count)
  void* tail_k;            // [Hkv][tail_capacity][d] post-RoPE keys
  void* tail_v;            // [Hkv][tail_capacity][d]
  // The compressed store; u == null while the row is dense (then only the tail is attended).
  int32_t store_tokens;    // tokens in the store, a multiple of C
  int32_t rank;
  int32_t chunk_capacity;  // chunks that u, landmarks and landmark_ids have room for
  int32_t compact;         // 1: after attending, the tail's whole chunks beyond local_tokens join the store
  void* u;                 // [chunk_capacity * C][rank] low-rank pre-RoPE keys
  const void* sv;          // [rank][Hkv * d]
  const void* proj;        // [Hkv * d][rank] projection of new keys (compaction)
  void* landmarks;         // [Hkv][chunk_capacity][d]
  int32_t* landmark_ids;   // [Hkv][chunk_capacity] ascending chunk ids
  int32_t* head_counts;    // [Hkv][SKV_HEAD_FIELDS]
  const void* outlier_k;   // [Hkv][max_outliers][C * d] exact chunks
  const void* outlier_v;
  void* selected_k;        // [Hkv][max_selected][C * d] chunks selected at the last step (slots)
  void* selected_v;
  int32_t* selected_ids;   // [Hkv][max_selected] chunk id per slot
  void* const* value_pages;  // host tier: page (c / page_chunks) * Hkv + h holds head h's chunks
  int32_t page_chunks;
  // The hot-value cache (hot_slots = 0: none), direct-mapped: chunk c may sit only in slot c % hot_slots.
  int32_t hot_slots;
  int32_t* hot_ids;        // [Hkv][hot_slots] chunk id per slot, -1 empty
  void* hot_v;             // [Hkv][hot_slots][C * d]
  int32_t fp8_rows;        // 0: the pages hold the storage dtype; C: fp8 chunks (fp8.h)
  uint8_t* value_bases;    // null, or the packed tier's bases (pack.h, pack_index order)
};
enum { SKV_ROW_WORDS = 28 };

// One decode step of one layer, for every row. 4-byte fields, SKV_STEP_WORDS words, in this order.
struct skv_layer_step {
  int32_t batch;           // rows in `rows`
  int32_t q_heads, kv_heads, d, C;
  int32_t max_selected;    // budget / C
  int32_t max_outliers;
  int32_t local_tokens;    // exact rows compaction leaves in the tail
  int32_t kv_dtype;        // storage dtype
  int32_t io_dtype;        // dtype of q, k, v and out
  int32_t rope_style;
  float scale;             // attention logits
  float score_scale;       // landmark scoring logits
  const double* inv_freq;  // [d / 2]
  const void* q;           // [inputs][Hq][d] pre-RoPE
  const void* k;           // [inputs][Hkv][d] pre-RoPE
  const void* v;           // [inputs][Hkv][d]
  void* out;               // [inputs][Hq][d]
  double* counters;        // [SKV_COUNTERS]
  const skv_row* rows;     // [batch]
};
enum { SKV_STEP_WORDS = 20 };

// Decode steps 1-5 of docs/algorithm.md for every active row of one layer, in one call, the same
// op sequence that decodeLayerComposed (packages/shadowkv/src/policies/decodeLayer.ts) runs:
//   1. q, k to f32, RoPE at `position`; k, v appended to the tail at tail_count (storage dtype).
//   2-4. Compressed rows, per kv head: landmark scores (score_scale, max over the GQA group), top
//      max_selected (ties: lower chunk id), reuse of the slots whose chunk stays selected, misses
//      fetched (skv_gather_values; from the hot-value cache where it holds them, which the
//      fetched misses then enter: hot_slots in reuse_slots.h) and rebuilt (skv_rebuild_keys) into
//      the freed slots.
//   5. Exact attention over outliers, selected chunks, then the tail (dense rows: the tail only);
//      out in io_dtype.
//   Then, where `compact` is set: the tail's oldest m = (tail_count + 1 - local_tokens) / C whole
//   chunks join the store (keys projected onto the basis into U rows store_tokens.., values to the
//   host pages, landmarks and ids appended, head landmark counts raised, the tail shifted down).
//   The caller has made room (chunk_capacity, pages) and mirrors these changes itself (tail_count,
//   position, store_tokens are read, never written). `compact` on a dense row is ignored.
// Before changing anything the step reserves an upper bound of the scratch it needs (the max over
// rows of: queries, outputs, and the largest of appending, one kv head's select / rebuild /
// attention, and compaction), so the step itself never allocates and cannot trap half-way.
// Returns SKV_OK; SKV_ERR_ALLOC when that scratch cannot be had (nothing is changed then); or
// SKV_ERR_ARG when the step is malformed (nothing is changed then either): d odd or
// <= 0, q_heads not a positive multiple of kv_heads, C <= 0, a dtype or rope style out of range,
// negative max_selected / max_outliers / local_tokens; on a row with input >= 0 (rows sitting out
// are not read): tail_count < 0, tail_count + 1 > tail_capacity, position < 0; on a compressed
// one: rank <= 0, page_chunks <= 0, hot_slots < 0 (or > 0 without hot_ids / hot_v), store_tokens not a multiple of C, head counts out of
// [0, chunk_capacity] / [0, max_outliers] / [0, max_selected], or compaction past chunk_capacity.
SKV_EXPORT int skv_decode_layer(const skv_layer_step* step);


// ---- linear.cc ----
// A model loop's projection: out[M x N] = x[M x K] . W^T, x f32 (row-major), W [N x K] in w_dtype
// (nn.Linear's layout), out f32. M >= 4 goes through skv_gemm; fewer rows (decode) read W in place.
SKV_EXPORT void skv_linear(const float* x, int M, int K, const void* W, int w_dtype, int N, float* out);
