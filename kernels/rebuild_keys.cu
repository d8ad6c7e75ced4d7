// Rebuilds the post-RoPE keys of selected chunks from the low-rank store: a block per group of
// chunks (rebuild_keys.cuh, the same code as the fused decode step), RoPE fused into the product.
// Mirrors runtime/wasm/rebuild_keys.cc (skv_rebuild_keys).
#include "rebuild_keys.cuh"

__global__ void __launch_bounds__(REBUILD_THREADS) RebuildKeysKernel(RebuildArgs a, const int32_t* chunk_ids,
                                                                     const int32_t* out_slots, int n_chunks) {
  extern __shared__ float smem[];
  const int per = rebuild_chunks_per_block(a.C), first = blockIdx.x * per;
  // NOTE: without slots, chunk i goes to slot i: the ids array doubles as the slot list's shape.
  __shared__ int32_t slots[REBUILD_TOKENS];
  const int n = min(per, n_chunks - first);
  for (int i = threadIdx.x; i < n; i += blockDim.x) slots[i] = out_slots ? out_slots[first + i] : first + i;
  rebuild_group(a, chunk_ids + first, slots, n, smem);
}

cudaError_t RebuildKeys(const void* U, int u_dtype, int rank, const void* SVh, int sv_dtype, int64_t ldsv, int d,
                        const int32_t* chunk_ids, const int32_t* out_slots, int n_chunks, int C, const double* inv_freq,
                        int style, void* out, int out_dtype, int64_t ldo, cudaStream_t stream) {
  if (n_chunks <= 0 || C <= 0 || d < 2) return cudaSuccess;
  const bool mma = rebuild_mma(U, u_dtype, SVh, sv_dtype, ldsv, d, rank, C);
  const RebuildArgs a{U, u_dtype, rank, SVh, sv_dtype, ldsv, d, C, inv_freq, style, out, out_dtype, ldo, mma};
  const size_t smem = rebuild_smem_bytes(C, d, mma, rank);
  SKV_CUDA_CALL(skv_smem_optin(RebuildKeysKernel, smem));
  const int blocks = (int)skv_ceil_div(n_chunks, rebuild_chunks_per_block(C));
  RebuildKeysKernel<<<blocks, REBUILD_THREADS, smem, stream>>>(a, chunk_ids, out_slots, n_chunks);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
