// Rebuilds the post-RoPE keys of selected chunks from the low-rank store:
// gather U rows, multiply by the head's slice of SV, rotate at the tokens' positions, store.
#include "dtype.h"
#include "scratch.h"

SKV_EXPORT void skv_rebuild_keys(const void* U, int u_dtype, int rank,
                                 const void* SVh, int sv_dtype, int ldsv, int d,
                                 const int32_t* chunk_ids, const int32_t* out_slots, int n_chunks, int C,
                                 const double* inv_freq, int style,
                                 void* out, int out_dtype, int ldo) {
  const int64_t rows = (int64_t)n_chunks * C;  // rows rebuilt
  if (rows <= 0 || d <= 0) return;
  if (rows > INT32_MAX) skv_trap_out_of_memory();  // more rows than the GEMM takes (and than wasm32 holds)
  const int M = (int)rows;
  Scratch<int32_t> pos(M);            // [M] token positions = rows of U
  Scratch<float> K((uint64_t)M * d);  // [M x d] keys in f32
  for (int i = 0; i < n_chunks; i++)
    for (int t = 0; t < C; t++) pos[i * C + t] = chunk_ids[i] * C + t;
  // 1. K = U[pos] SVh, the row gather done by the GEMM's packing.
  skv_gemm(M, d, rank, 1.f, U, u_dtype, rank, 0, pos, SVh, sv_dtype, ldsv, 0, 0.f, K, d);
  // 2. RoPE at the same positions (consecutive inside a chunk, so the fast recurrence applies).
  skv_rope(K, M, d, d, pos, inv_freq, style, +1);
  // 3. Store each chunk's rows in its slot.
  for (int i = 0; i < n_chunks; i++) {
    size_t row0 = (size_t)(out_slots ? out_slots[i] : i) * C;
    for (int t = 0; t < C; t++)
      store_f32(K + (size_t)(i * C + t) * d, (char*)out + (row0 + t) * ldo * dtype_size(out_dtype), out_dtype, d);
  }
}
