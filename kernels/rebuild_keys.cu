// Rebuilds the post-RoPE keys of selected chunks from the low-rank store: for each chunk (one
// block), rows t < C are U[pos] . SVh with pos = chunk*C + t, rotated at pos (float64 angle) and
// stored in the chunk's slot. A thread computes both elements of a RoPE pair, so the rotation is
// fused into the product. Mirrors runtime/wasm/rebuild_keys.cc (skv_rebuild_keys).
#include "common.cuh"
#include "dtype.cuh"
#include "rope.cuh"

enum { REBUILD_THREADS = 256 };

__global__ void __launch_bounds__(REBUILD_THREADS) RebuildKeysKernel(
    const void* U, int u_dtype, int rank, const void* SVh, int sv_dtype, int64_t ldsv, int d, const int32_t* chunk_ids,
    const int32_t* out_slots, int C, const double* inv_freq, int style, void* out, int out_dtype, int64_t ldo) {
  const int i = blockIdx.x;  // chunk
  const int half = d / 2;
  const int64_t chunk = chunk_ids[i];
  const int64_t slot = out_slots ? out_slots[i] : i;
  for (int w = threadIdx.x; w < C * half; w += blockDim.x) {
    const int t = w / half, p = w % half;
    const int64_t pos = chunk * C + t;
    const int e1 = style == SKV_ROPE_INTERLEAVED ? 2 * p : p;
    const int e2 = style == SKV_ROPE_INTERLEAVED ? 2 * p + 1 : p + half;
    // 1. Both elements of the pair: U[pos, :] . SVh[:, e].
    float x[2] = {0.f, 0.f};
    for (int r = 0; r < rank; r++) {
      const float u = load_f32(U, u_dtype, (size_t)(pos * rank + r));
      x[0] += u * load_f32(SVh, sv_dtype, (size_t)(r * ldsv + e1));
      x[1] += u * load_f32(SVh, sv_dtype, (size_t)(r * ldsv + e2));
    }
    // 2. RoPE at pos, 3. stored in the chunk's slot.
    float c, s;
    rope_rotation(pos, inv_freq[p], &c, &s);
    const size_t row = (size_t)((slot * C + t) * ldo);
    store_f32(out, out_dtype, row + e1, x[0] * c - x[1] * s);
    store_f32(out, out_dtype, row + e2, x[1] * c + x[0] * s);
  }
}

cudaError_t RebuildKeys(const void* U, int u_dtype, int rank, const void* SVh, int sv_dtype, int64_t ldsv, int d,
                        const int32_t* chunk_ids, const int32_t* out_slots, int n_chunks, int C, const double* inv_freq,
                        int style, void* out, int out_dtype, int64_t ldo, cudaStream_t stream) {
  if (n_chunks <= 0 || C <= 0 || d < 2) return cudaSuccess;
  const int threads = (int)std::min<int64_t>(REBUILD_THREADS, skv_ceil_div((int64_t)C * (d / 2), 32) * 32);
  RebuildKeysKernel<<<n_chunks, threads, 0, stream>>>(U, u_dtype, rank, SVh, sv_dtype, ldsv, d, chunk_ids, out_slots, C,
                                                      inv_freq, style, out, out_dtype, ldo);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
