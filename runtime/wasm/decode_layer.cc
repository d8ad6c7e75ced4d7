// One decode step of one layer, every batch row in one call: decode steps 1-5 of docs/algorithm.md
// and compaction. It calls the exported ops in the order that decodeLayerComposed
// (packages/shadowkv/src/policies/decodeLayer.ts) does, with the same arguments, so its outputs are
// bit-identical to that composed path; what goes away is one JS -> wasm crossing per op and every
// per-op allocation (temporaries are Scratch, i.e. the arena).
#include <stdint.h>
#include <string.h>
#include <algorithm>
#include "dtype.h"
#include "fp8.h"
#include "pack.h"
#include "online_softmax.h"
#include "reuse_slots.h"
#include "scratch.h"

// NOTE: TS writes the records word by word; in wasm32 every field is one 4-byte word.
static_assert(sizeof(void*) != 4 || sizeof(skv_row) == SKV_ROW_WORDS * 4, "skv_row is SKV_ROW_WORDS words");
static_assert(sizeof(void*) != 4 || sizeof(skv_layer_step) == SKV_STEP_WORDS * 4, "skv_layer_step is SKV_STEP_WORDS words");

namespace {

// Element i of a writable buffer of the given dtype.
void* at(void* base, int dtype, size_t i) { return (char*)base + i * dtype_size(dtype); }

int32_t& head_field(const skv_row& r, int h, int field) { return r.head_counts[h * SKV_HEAD_FIELDS + field]; }

// A running total and its per-step twin.
void tally(double* counters, int total, int last, double n) {
  counters[total] += n;
  counters[last] += n;
}

// Whole chunks of the tail (cnt rows) beyond local_tokens, which compaction moves to the store.
int compacted_chunks(const skv_layer_step& s, int cnt) {
  int m = (cnt - s.local_tokens) / s.C;
  return m > 0 ? m : 0;
}

// ---- validation: everything is checked before anything is written ----

bool valid_dtype(int t) { return t == SKV_F32 || t == SKV_F16 || t == SKV_BF16; }

// The store of a compressed row: per-head counts within capacities, room for what compaction adds.
bool valid_store(const skv_layer_step& s, const skv_row& r, int cnt) {
  if (r.rank <= 0 || r.store_tokens < 0 || r.store_tokens % s.C || r.chunk_capacity < 0 || r.page_chunks <= 0) return false;
  if (r.fp8_rows != 0 && r.fp8_rows != s.C) return false;
  if (r.value_bases && (r.fp8_rows != 0 || s.kv_dtype != SKV_BF16)) return false;
  if (r.hot_slots < 0 || (r.hot_slots > 0 && (!r.hot_ids || !r.hot_v))) return false;
  const int add = r.compact ? compacted_chunks(s, cnt) : 0;  // chunks compaction appends
  if ((int64_t)r.store_tokens / s.C + add > r.chunk_capacity) return false;
  for (int h = 0; h < s.kv_heads; h++) {
    int L = head_field(r, h, SKV_HEAD_LANDMARKS), O = head_field(r, h, SKV_HEAD_OUTLIERS);
    int sc = head_field(r, h, SKV_HEAD_SELECTED);
    if (L < 0 || (int64_t)L + add > r.chunk_capacity || O < 0 || O > s.max_outliers || sc < 0 || sc > s.max_selected)
      return false;
  }
  return true;
}

bool valid_row(const skv_layer_step& s, const skv_row& r) {
  if (r.tail_count < 0 || (int64_t)r.tail_count + 1 > r.tail_capacity || r.position < 0) return false;
  return !r.u || valid_store(s, r, r.tail_count + 1);
}

bool valid_step(const skv_layer_step& s) {
  if (s.batch < 0 || s.d <= 0 || s.d % 2 || s.kv_heads <= 0 || s.q_heads <= 0 || s.q_heads % s.kv_heads || s.C <= 0)
    return false;
  if (!valid_dtype(s.kv_dtype) || !valid_dtype(s.io_dtype)) return false;
  if (s.rope_style != SKV_ROPE_HALF && s.rope_style != SKV_ROPE_INTERLEAVED) return false;
  if (s.max_selected < 0 || s.max_outliers < 0 || s.local_tokens < 0 || !s.counters || (s.batch && !s.rows)) return false;
  for (int b = 0; b < s.batch; b++)
    if (s.rows[b].input >= 0 && !valid_row(s, s.rows[b])) return false;
  return true;
}

// ---- the step ----

// 1. q and k to f32, RoPE at `position`; k (post-RoPE) and v appended to the tail at tail_count.
void append_token(const skv_layer_step& s, const skv_row& r, float* qf) {
  const int Hq = s.q_heads, Hkv = s.kv_heads, d = s.d, io = s.io_dtype, kv = s.kv_dtype;
  Scratch<int32_t> pos(std::max(Hq, Hkv));  // every head of the token sits at `position`
  for (int i = 0; i < std::max(Hq, Hkv); i++) pos[i] = r.position;
  skv_convert(dtype_at(s.q, io, (size_t)r.input * Hq * d), io, qf, SKV_F32, Hq * d);
  skv_rope(qf, Hq, d, d, pos, s.inv_freq, s.rope_style, +1);
  Scratch<float> kf((uint64_t)Hkv * d);  // [Hkv x d]
  skv_convert(dtype_at(s.k, io, (size_t)r.input * Hkv * d), io, kf, SKV_F32, Hkv * d);
  skv_rope(kf, Hkv, d, d, pos, s.inv_freq, s.rope_style, +1);
  for (int h = 0; h < Hkv; h++) {
    size_t row = ((size_t)h * r.tail_capacity + r.tail_count) * d;
    skv_convert(kf + (size_t)h * d, SKV_F32, at(r.tail_k, kv, row), kv, d);
    skv_convert(dtype_at(s.v, io, ((size_t)r.input * Hkv + h) * d), io, at(r.tail_v, kv, row), kv, d);
  }
}

// Head h's exact tail, cnt rows.
skv_segment tail_segment(const skv_layer_step& s, const skv_row& r, int h, int cnt) {
  size_t off = (size_t)h * r.tail_capacity * s.d;
  return skv_segment{at(r.tail_k, s.kv_dtype, off), at(r.tail_v, s.kv_dtype, off), cnt, s.d};
}

// 5 for a dense row: attention over the tail alone.
void attend_dense(const skv_layer_step& s, const skv_row& r, int h, int cnt, const float* qg, float* og) {
  skv_segment tail = tail_segment(s, r, h, cnt);
  skv_sparse_attention(qg, s.q_heads / s.kv_heads, s.d, s.scale, &tail, 1, s.kv_dtype, og);
  tally(s.counters, SKV_ATTENDED_TOKENS, SKV_LAST_ATTENDED_TOKENS, cnt);
  tally(s.counters, SKV_HEADS, SKV_LAST_HEADS, 1);
}

// 2-3. Scores of head h's landmarks, then the top max_selected as chunk ids (ascending). Returns m.
int select_head(const skv_layer_step& s, const skv_row& r, int h, const float* qg, int32_t* ids) {
  const int g = s.q_heads / s.kv_heads, d = s.d, L = head_field(r, h, SKV_HEAD_LANDMARKS);
  Scratch<float> scores(L), work((uint64_t)g * L);  // [L], [g x L]
  skv_score_chunks(qg, g, d, s.score_scale, at(r.landmarks, s.kv_dtype, (size_t)h * r.chunk_capacity * d),
                   s.kv_dtype, L, scores, work);
  int m = skv_select_chunks(scores, L, s.max_selected, 1, ids);
  for (int i = 0; i < m; i++) ids[i] = r.landmark_ids[(size_t)h * r.chunk_capacity + ids[i]];
  return m;
}

// 4, values: the n misses' chunks into their slots of selV, from the hot-value cache where it holds
// them and from the host pages otherwise; the fetched ones then enter the cache (hot_slots).
// miss_ids / miss_slots are reordered. Returns the misses the cache served.
int fetch_values(const skv_layer_step& s, const skv_row& r, int h, int32_t* miss_ids, int32_t* miss_slots, int n, void* selV) {
  const int kv = s.kv_dtype, P = r.hot_slots;
  const size_t block = (size_t)s.C * s.d, bytes = block * dtype_size(kv);
  if (P == 0) {
    skv_gather_values(r.value_pages, r.page_chunks, s.kv_heads, h, miss_ids, miss_slots, n, (int)block, kv, r.fp8_rows, r.value_bases, selV);
    return 0;
  }
  void* hot_v = at(r.hot_v, kv, (size_t)h * P * block);
  Scratch<int32_t> codes(n);  // [n]
  const int hits = hot_slots(r.hot_ids + (size_t)h * P, P, miss_ids, n, codes);
  int f = 0;  // the fetched misses move to the front, in order
  for (int i = 0; i < n; i++) {
    if (codes[i] >= 0) {
      memcpy(at(selV, kv, miss_slots[i] * block), at(hot_v, kv, codes[i] * block), bytes);
      continue;
    }
    miss_ids[f] = miss_ids[i];
    miss_slots[f] = miss_slots[i];
    codes[f++] = codes[i];
  }
  skv_gather_values(r.value_pages, r.page_chunks, s.kv_heads, h, miss_ids, miss_slots, f, (int)block, kv, r.fp8_rows, r.value_bases, selV);
  for (int i = 0; i < f; i++)
    if (codes[i] <= -2) memcpy(at(hot_v, kv, (-2 - codes[i]) * block), at(selV, kv, miss_slots[i] * block), bytes);
  return hits;
}

// 2-5 for kv head h of a compressed row.
void attend_compressed(const skv_layer_step& s, const skv_row& r, int h, int cnt, const float* qg, float* og) {
  const int Hkv = s.kv_heads, g = s.q_heads / Hkv, d = s.d, C = s.C, kv = s.kv_dtype, S = s.max_selected;
  const size_t block = (size_t)C * d;  // one chunk, elements
  int32_t* slot_ids = r.selected_ids + (size_t)h * S;  // [S] chunk id per slot
  void* selK = at(r.selected_k, kv, (size_t)h * S * block);
  void* selV = at(r.selected_v, kv, (size_t)h * S * block);
  // 2-3. Score the landmarks, select the top chunks.
  Scratch<int32_t> ids(S);  // [S]
  const int m = select_head(s, r, h, qg, ids);
  // 4. Reuse last step's slots (all cleared if the selection shrank); fetch V, rebuild K for misses.
  int sc = head_field(r, h, SKV_HEAD_SELECTED);
  if (m < sc) {
    for (int i = 0; i < S; i++) slot_ids[i] = -1;
    sc = 0;
  }
  Scratch<int32_t> miss_ids(S), miss_slots(S);  // [S]
  int n_miss = 0;
  const int hits = reuse_slots(slot_ids, sc, ids, m, miss_ids, miss_slots, &n_miss);
  head_field(r, h, SKV_HEAD_SELECTED) = m;
  int hot_hits = 0;
  if (n_miss > 0) {
    skv_rebuild_keys(r.u, kv, r.rank, dtype_at(r.sv, kv, (size_t)h * d), kv, Hkv * d, d, miss_ids, miss_slots,
                     n_miss, C, s.inv_freq, s.rope_style, selK, kv, d);
    hot_hits = fetch_values(s, r, h, miss_ids, miss_slots, n_miss, selV);
  }
  // 5. Exact attention over the outlier chunks, the selected chunks, then the tail.
  const int O = head_field(r, h, SKV_HEAD_OUTLIERS);
  const size_t out_off = (size_t)h * s.max_outliers * block;
  skv_segment segs[3] = {{dtype_at(r.outlier_k, kv, out_off), dtype_at(r.outlier_v, kv, out_off), O * C, d},
                         {selK, selV, m * C, d},
                         tail_segment(s, r, h, cnt)};
  skv_sparse_attention(qg, g, d, s.scale, segs, 3, kv, og);
  tally(s.counters, SKV_HITS, SKV_LAST_HITS, hits);
  tally(s.counters, SKV_MISSES, SKV_LAST_MISSES, n_miss);
  tally(s.counters, SKV_HOT_HITS, SKV_LAST_HOT_HITS, hot_hits);
  tally(s.counters, SKV_SELECTED_TOKENS, SKV_LAST_SELECTED_TOKENS, (double)m * C);
  tally(s.counters, SKV_ATTENDED_TOKENS, SKV_LAST_ATTENDED_TOKENS, (double)O * C + (double)m * C + cnt);
  tally(s.counters, SKV_HEADS, SKV_LAST_HEADS, 1);
}

// Compaction, keys: U rows [store_tokens, +n) = K_pre proj, K_pre = the tail's first n keys of
// every head un-rotated and laid side by side [n x Hkv*d] (the product prefill's U came from).
void project_keys(const skv_layer_step& s, const skv_row& r, int n) {
  const int Hkv = s.kv_heads, d = s.d, D = Hkv * d, kv = s.kv_dtype, rank = r.rank;
  Scratch<float> K((uint64_t)n * D);  // [n x D]
  Scratch<int32_t> pos(n);          // [n]
  for (int t = 0; t < n; t++) pos[t] = r.store_tokens + t;
  for (int h = 0; h < Hkv; h++) {
    skv_convert_rows(at(r.tail_k, kv, (size_t)h * r.tail_capacity * d), kv, d, K + (size_t)h * d, SKV_F32, D, n, d);
    skv_rope(K + (size_t)h * d, n, d, D, pos, s.inv_freq, s.rope_style, -1);
  }
  Scratch<float> Unew((uint64_t)n * rank);  // [n x rank]
  skv_gemm(n, rank, D, 1.f, K, SKV_F32, D, 0, nullptr, r.proj, kv, rank, 0, 0.f, Unew, rank);
  skv_convert(Unew, SKV_F32, at(r.u, kv, (size_t)r.store_tokens * rank), kv, n * rank);
}

// Compaction, head h: the values of chunks first.. to the host pages (quantized or packed where
// they hold fp8 or packed chunks); their landmarks and ids appended after the head's L landmarks.
void store_chunks(const skv_layer_step& s, const skv_row& r, int h, int first, int mm) {
  const int d = s.d, C = s.C, kv = s.kv_dtype;
  const size_t block = (size_t)C * d, tail0 = (size_t)h * r.tail_capacity * d;
  const size_t chunk_bytes = r.fp8_rows > 0 ? fp8_chunk_bytes(C, d) : block * dtype_size(kv);
  for (int i = 0; i < mm; i++) {
    int c = first + i;
    char* to = (char*)r.value_pages[(size_t)(c / r.page_chunks) * s.kv_heads + h] + (size_t)(c % r.page_chunks) * chunk_bytes;
    if (r.fp8_rows > 0) skv_quantize_values(at(r.tail_v, kv, tail0 + i * block), kv, 1, C, d, to);
    else if (r.value_bases) skv_pack_values(at(r.tail_v, kv, tail0 + i * block), 1, (int)block, to, r.value_bases + pack_index(r.page_chunks, s.kv_heads, h, c));
    else memcpy(to, at(r.tail_v, kv, tail0 + i * block), chunk_bytes);
  }
  const int L = head_field(r, h, SKV_HEAD_LANDMARKS);
  Scratch<float> lm((uint64_t)mm * d), min_cos(mm);  // [mm x d], [mm]
  skv_landmarks(at(r.tail_k, kv, tail0), kv, d, mm, C, d, lm, min_cos);
  skv_convert(lm, SKV_F32, at(r.landmarks, kv, ((size_t)h * r.chunk_capacity + L) * d), kv, mm * d);
  for (int i = 0; i < mm; i++) r.landmark_ids[(size_t)h * r.chunk_capacity + L + i] = first + i;
  head_field(r, h, SKV_HEAD_LANDMARKS) = L + mm;
}

// Compaction: the tail's oldest whole chunks beyond local_tokens join the store; the tail shifts down.
void compact(const skv_layer_step& s, const skv_row& r, int cnt) {
  const int mm = compacted_chunks(s, cnt), n = mm * s.C, d = s.d, kv = s.kv_dtype;
  if (mm <= 0) return;
  project_keys(s, r, n);
  for (int h = 0; h < s.kv_heads; h++) store_chunks(s, r, h, r.store_tokens / s.C, mm);
  for (int h = 0; h < s.kv_heads; h++) {
    size_t row0 = (size_t)h * r.tail_capacity * d, bytes = (size_t)(cnt - n) * d * dtype_size(kv);
    memmove(at(r.tail_k, kv, row0), at(r.tail_k, kv, row0 + (size_t)n * d), bytes);
    memmove(at(r.tail_v, kv, row0), at(r.tail_v, kv, row0 + (size_t)n * d), bytes);
  }
  s.counters[SKV_COMPACTIONS] += 1;
}

void decode_row(const skv_layer_step& s, const skv_row& r) {
  const int Hq = s.q_heads, d = s.d, g = Hq / s.kv_heads, cnt = r.tail_count + 1;
  Scratch<float> qf((uint64_t)Hq * d), of((uint64_t)Hq * d);  // [Hq x d] queries, attention outputs
  // 1. RoPE, append the token to the tail.
  append_token(s, r, qf);
  // 2-5. Per kv head: select, reuse, fetch and rebuild, attend (a dense row: attend its tail).
  for (int h = 0; h < s.kv_heads; h++) {
    const float* qg = qf + (size_t)h * g * d;  // [g x d] this head's GQA group
    float* og = of + (size_t)h * g * d;
    if (r.u) attend_compressed(s, r, h, cnt, qg, og);
    else attend_dense(s, r, h, cnt, qg, og);
  }
  // Output in the io dtype.
  skv_convert(of, SKV_F32, at(s.out, s.io_dtype, (size_t)r.input * Hq * d), s.io_dtype, Hq * d);
  // Compaction, where asked for (a dense row has no store to compact into: the flag is ignored).
  if (r.compact && r.u) compact(s, r, cnt);
}

// ---- scratch: an upper bound of what a step takes from the arena, reserved before it runs ----
// NOTE: these mirror the Scratch objects of the functions above and of the ops they call (sizes
// in 64 bits, saturating); the native test checks that the step never leaves the arena and that
// the bound meets the peak. A change to any of those Scratch uses must change this too.

// One row: decode_row's qf and of, plus the largest of its phases (each releases its scratch).
uint64_t row_scratch(const skv_layer_step& s, const skv_row& r) {
  const uint64_t Hq = s.q_heads, Hkv = s.kv_heads, d = s.d, C = s.C, g = Hq / Hkv, S = s.max_selected;
  // 1. append_token: pos, kf.
  const uint64_t append = scratch_bytes<int32_t>(std::max(Hq, Hkv)) + scratch_bytes<float>(Hkv * d);
  // 2-5, one kv head at a time. A dense row: skv_sparse_attention over the tail.
  uint64_t head = online_softmax_bytes(g, d), compaction = 0;
  if (r.u) {
    uint64_t L = 0;  // the most landmarks of any head
    for (int h = 0; h < s.kv_heads; h++) L = std::max<uint64_t>(L, head_field(r, h, SKV_HEAD_LANDMARKS));
    const uint64_t m = std::min(S, L), M = size_mul(m, C);  // selected chunks (>= misses), rebuilt rows
    // select_head: scores, work, then skv_score_chunks' (own, row) or skv_select_chunks' idx.
    const uint64_t select = scratch_bytes<float>(L) + scratch_bytes<float>(size_mul(g, L)) +
                            std::max(scratch_bytes<float>(0) + scratch_bytes<float>(d), scratch_bytes<int32_t>(L));
    // Then miss_ids, miss_slots, and one of reuse_slots, skv_rebuild_keys (pos, K), fetch_values'
    // codes and the fp8 gather's rows, the attention.
    const uint64_t gather = (r.hot_slots ? scratch_bytes<int32_t>(m) : 0) + (r.fp8_rows ? scratch_bytes<float>(C * d) : 0);
    const uint64_t fetch = 2 * scratch_bytes<int32_t>(S) +
                           std::max({reuse_slots_bytes(m), scratch_bytes<int32_t>(M) + scratch_bytes<float>(size_mul(M, d)), gather,
                                     online_softmax_bytes(g, d)});
    head = scratch_bytes<int32_t>(S) + std::max(select, fetch);  // ids live throughout
    const uint64_t mm = r.compact ? compacted_chunks(s, r.tail_count + 1) : 0, n = mm * C;
    if (mm > 0) {
      // project_keys: K, pos, Unew; or store_chunks: lm, min_cos, then skv_landmarks' rows.
      const uint64_t keys = scratch_bytes<float>(size_mul(n, Hkv * d)) + scratch_bytes<int32_t>(n) +
                            scratch_bytes<float>(size_mul(n, r.rank));
      const uint64_t chunks = scratch_bytes<float>(mm * d) + scratch_bytes<float>(mm) + scratch_bytes<float>(C * d);
      compaction = std::max(keys, chunks);
    }
  }
  return 2 * scratch_bytes<float>(Hq * d) + std::max({append, head, compaction});
}

}  // namespace

uint64_t skv_decode_layer_scratch(const skv_layer_step& s) {
  uint64_t most = 0;  // rows run one after another and release their scratch
  for (int b = 0; b < s.batch; b++)
    if (s.rows[b].input >= 0) most = std::max(most, row_scratch(s, s.rows[b]));
  return most;
}

SKV_EXPORT int skv_decode_layer(const skv_layer_step* step) {
  if (!step || !valid_step(*step)) return SKV_ERR_ARG;
  const skv_layer_step& s = *step;
  // All the scratch the step can take, reserved before anything changes: with it in the arena the
  // step allocates nothing, so it cannot trap with rows half-updated.
  if (!scratch_reserve(skv_decode_layer_scratch(s))) return SKV_ERR_ALLOC;
  for (int c = SKV_LAST_HITS; c < SKV_COUNTERS; c++) s.counters[c] = 0;
  s.counters[SKV_STEPS] += 1;
  for (int b = 0; b < s.batch; b++)
    if (s.rows[b].input >= 0) decode_row(s, s.rows[b]);
  return SKV_OK;
}
