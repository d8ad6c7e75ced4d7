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
// Method: Gram matrix G = K^T K, randomized subspace iteration on G (rank + oversample columns,
// power_iters iterations, deterministic from seed), Rayleigh-Ritz eigensolve, U = K proj.
SKV_EXPORT int skv_low_rank_keys(const float* K, int S, int D, int rank, int oversample,
                                 int power_iters, uint32_t seed,
                                 float* U, float* SV, float* proj, float* sigma);

// ---- landmarks.cc ----
// keys: n_chunks*C rows of d (storage dtype, row stride ldk), one kv head, post-RoPE.
// landmarks[c] = mean of chunk c's rows (f32 [n_chunks x d]);
// min_cos[c] = min over the chunk's rows k of dot(L, k) / max(|L||k|, 1e-30).
SKV_EXPORT void skv_landmarks(const void* keys, int dtype, int ldk, int n_chunks, int C, int d,
                              float* landmarks, float* min_cos);

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

// ---- convert_rows.cc ----
// rows x cols elements: dst[r*dst_ld + c] = convert(src[r*src_ld + c]); a strided skv_convert
// (e.g. head h's rows [t x d] into column block h*d of a [t x Hkv*d] matrix).
SKV_EXPORT void skv_convert_rows(const void* src, int src_dtype, int src_ld, void* dst, int dst_dtype,
                                 int dst_ld, int rows, int cols);
