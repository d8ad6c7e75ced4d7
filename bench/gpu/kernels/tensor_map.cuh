// Tensor maps for the benches' reads by the tensor memory accelerator (tma_read_bench,
// logits_bench): cuTensorMapEncodeTiled through the runtime's driver entry point, so nothing links
// libcuda, and the copy of one box into shared memory.
#pragma once
#include <cuda.h>
#include <cudaTypedefs.h>
#include "../../../kernels/mma.cuh"
#include "bench_util.cuh"

// A [rows x cols] row-major bf16 matrix as a map of box_cols x box_rows boxes with the 128-byte
// swizzle: within each 8 rows of 128 bytes, 16-byte word w of row r lands at w ^ (r % 8), the layout
// an ldmatrix over 8 rows reads without bank conflicts. Exits 2 where the driver cannot make it.
static CUtensorMap bf16_swizzled_map(const void* base, uint64_t rows, uint64_t cols, uint32_t box_cols, uint32_t box_rows) {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = nullptr;
  if (!encode) {
    cudaDriverEntryPointQueryResult found;
    CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", reinterpret_cast<void**>(&encode), 12000, cudaEnableDefault, &found));
    if (found != cudaDriverEntryPointSuccess || !encode) {
      fprintf(stderr, "cuTensorMapEncodeTiled not found in the driver\n");
      exit(2);
    }
  }
  CUtensorMap m;
  const cuuint64_t dims[2] = {cols, rows};
  const cuuint64_t strides[1] = {cols * 2};
  const cuuint32_t box[2] = {box_cols, box_rows};
  const cuuint32_t elem[2] = {1, 1};
  const CUresult r = encode(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(base), dims, strides, box, elem,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    fprintf(stderr, "cuTensorMapEncodeTiled: error %d\n", (int)r);
    exit(2);
  }
  return m;
}

// Box (col0, row0) of `map` into dst (1024-byte aligned), counted on bar.
__device__ __forceinline__ void tma_box(void* dst, const CUtensorMap* map, int col0, int row0, uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
               ::"r"(skv_mma::smem_addr(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(col0), "r"(row0),
                 "r"(skv_mma::smem_addr(bar)) : "memory");
#else
  __trap();
#endif
}
