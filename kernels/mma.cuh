// Tensor-core f32 products by split bf16 ("bf16x3"), for the large products of prefill: the Gram
// matrix and U = K proj of low_rank_keys, and causal attention over bf16 keys and values. Each f32
// operand is a = hi + lo, hi = bf16(a), lo = bf16(a - hi) (17 significant bits between them), and
// a b ~ lo b_hi + hi b_lo + hi b_hi, three mma.sync m16n8k16 bf16 with f32 accumulation (sm_80 and
// later). Products are then good to about 2^-16 of |a b| for any f32 inputs (not only
// bf16-representable ones), against 2^-24 in f32; a bf16 operand needs only hi (two products).
// NOTE: the tensor cores add into their f32 accumulator rounding toward zero, which biases a long
// sum of same-signed terms (a Gram diagonal loses ~2^-24 per step). So the mma accumulators only
// ever sum a few slabs; they are then added, rounded to nearest, into an f32 accumulator.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

namespace skv_mma {

// One block computes a BM x BN tile of C with 8 warps in 2 x 4, each warp 64 x 32 (MT x NT mma
// tiles of 16 x 8); op(A) and op(B) are staged BK deep.
enum { BM = 128, BN = 128, BK = 32, THREADS = 256, MT = 4, NT = 4, PAD = 8, FLUSH_SLABS = 8 };
// Accumulator values per thread.
enum { ACC = MT * NT * 4 };
// Products of fewer multiply-adds stay on the SIMT f32 kernel (gemm.cu): 2^30 of them take it
// ~0.1 ms on an H200, and below that f32 accuracy is cheap.
constexpr int64_t SPLIT_MIN_MACS = int64_t(1) << 30;

// hi = bf16(x, y) rounded to nearest even, lo = bf16 of what hi missed; x in the low half.
__device__ __forceinline__ void split_bf16x2(float x, float y, uint32_t& hi, uint32_t& lo) {
  uint32_t h, l;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(h) : "f"(y), "f"(x));  // NOTE: the first source is the upper half
  const float xh = __uint_as_float(h << 16), yh = __uint_as_float(h & 0xffff0000u);
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(l) : "f"(__fsub_rn(y, yh)), "f"(__fsub_rn(x, xh)));  // exact differences
  hi = h;
  lo = l;
}

// Four 8 x 8 b16 matrices from shared memory; lane L gives the address of row L % 8 of matrix L / 8.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const uint16_t* p) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s) : "memory");
}

// The same, each matrix transposed.
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const uint16_t* p) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s) : "memory");
}

// Two 32-bit words of shared memory at p (8-byte aligned), read where the call stands: volatile,
// so a loop-invariant read is not hoisted into registers the kernel cannot spare.
__device__ __forceinline__ uint2 lds_u2(const void* p) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "r"((unsigned)__cvta_generic_to_shared(p)) : "memory");
  return v;
}

// c[16 x 8] += a[16 x 16] b[16 x 8], bf16 in, f32 accumulation.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16 bytes global -> shared without passing through registers; src_bytes 0 zero-fills (nothing is read).
__device__ __forceinline__ void cp_async16(uint16_t* dst, const void* src, int src_bytes) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(src), "r"(src_bytes) : "memory");
}
// 8 bytes global -> shared the same way (both 8-byte aligned): one float64.
__device__ __forceinline__ void cp_async8(void* dst, const void* src) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(s), "l"(src) : "memory");
}
// 4 bytes global -> shared the same way (both 4-byte aligned): one float or int32.
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(s), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// The bulk-copy engine and shared-memory barriers (sm_90+; on older devices these trap, and their
// callers take the cp.async path). A barrier's phase completes once `count` threads have arrived
// and every byte that they announced has landed.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define SKV_SM90_ASM(...) asm volatile(__VA_ARGS__)
#else
#define SKV_SM90_ASM(...) __trap()
#endif
__device__ __forceinline__ unsigned smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count) {
  SKV_SM90_ASM("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
// Makes initialized barriers visible to the bulk-copy engine (then a block barrier, before use).
__device__ __forceinline__ void mbar_init_fence() { SKV_SM90_ASM("fence.mbarrier_init.release.cluster;" ::: "memory"); }
// This thread's arrival, announcing `bytes` still to land.
__device__ __forceinline__ void mbar_arrive_expect(uint64_t* bar, unsigned bytes) {
  SKV_SM90_ASM("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
// Waits until the barrier's phase of the given parity has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
  SKV_SM90_ASM("{\n .reg .pred p;\n WAIT_%=: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra WAIT_%=;\n}"
               ::"r"(smem_addr(bar)), "r"(parity) : "memory");
}
// Orders this thread's earlier generic accesses to shared memory before its later bulk copies.
__device__ __forceinline__ void fence_proxy_async() { SKV_SM90_ASM("fence.proxy.async.shared::cta;" ::: "memory"); }
// Orders this thread's earlier stores to global memory before later bulk copies that read them (by
// any thread of the block, after a barrier). Nothing before sm_90, whose loads are all generic.
__device__ __forceinline__ void fence_proxy_async_global() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.global;" ::: "memory");
#endif
}
// `bytes` (a multiple of 16; both addresses 16-byte aligned) from global to shared memory, counted on bar.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
  SKV_SM90_ASM("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
               ::"r"(smem_addr(dst)), "l"(src), "r"(bytes), "r"(smem_addr(bar)) : "memory");
}
#undef SKV_SM90_ASM

// A ROWS x COLS slab of a row-major f32 matrix p (row stride ld), read by one block in float4s and
// written to shared memory as its bf16 hi and lo parts ([ROWS][COLS + PAD] each). Rows >= rlim and
// columns >= clim read as 0; rows go through rowmap when given. vec: ld and p allow float4 loads.
template <int ROWS, int COLS>
struct Slab {
  enum { V = ROWS * COLS / 4 / THREADS, LD = COLS + PAD };
  float4 v[V];

  __device__ __forceinline__ void load(const float* p, int64_t ld, const int32_t* rowmap, int r0, int rlim, int c0,
                                       int clim, bool vec) {
#pragma unroll
    for (int u = 0; u < V; u++) {
      const int idx = threadIdx.x + u * THREADS, r = r0 + idx / (COLS / 4), c = c0 + idx % (COLS / 4) * 4;
      float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
      if (r < rlim) {
        const float* src = p + (rowmap ? (int64_t)rowmap[r] : (int64_t)r) * ld + c;
        if (vec && c + 3 < clim) {
          x = __ldg(reinterpret_cast<const float4*>(src));
        } else {
          if (c < clim) x.x = src[0];
          if (c + 1 < clim) x.y = src[1];
          if (c + 2 < clim) x.z = src[2];
          if (c + 3 < clim) x.w = src[3];
        }
      }
      v[u] = x;
    }
  }

  __device__ __forceinline__ void store(uint16_t* hi, uint16_t* lo) const {
#pragma unroll
    for (int u = 0; u < V; u++) {
      const int idx = threadIdx.x + u * THREADS, at = idx / (COLS / 4) * LD + idx % (COLS / 4) * 4;
      uint32_t h0, l0, h1, l1;
      split_bf16x2(v[u].x, v[u].y, h0, l0);
      split_bf16x2(v[u].z, v[u].w, h1, l1);
      *reinterpret_cast<uint2*>(hi + at) = make_uint2(h0, h1);
      *reinterpret_cast<uint2*>(lo + at) = make_uint2(l0, l1);
    }
  }
};

// The operands of one tile product. op(A)(i, k) = a_kmajor ? a[k*lda + i] : a[row(i)*lda + k] with
// row(i) = a_rows ? a_rows[i] : i; op(B)(k, j) = b[k*ldb + j]. i < M, j < N.
struct TileArgs {
  const float* a; int64_t lda; const int32_t* a_rows; bool a_vec;
  const float* b; int64_t ldb; bool b_vec;
  int M, N;
};

// Shared memory of split_tile: two stages of the hi/lo slabs, then the block accumulator.
template <bool A_KMAJOR>
struct TileSmem {
  enum {
    A_ELEMS = A_KMAJOR ? BK * (BM + PAD) : BM * (BK + PAD),
    B_ELEMS = BK * (BN + PAD),
    STAGE = 2 * A_ELEMS + 2 * B_ELEMS,  // bf16 elements: A hi, A lo, B hi, B lo
  };
  static constexpr size_t bytes() { return sizeof(uint16_t) * 2 * STAGE + sizeof(float) * ACC * THREADS; }
};

// acc[mt][nt] of this warp += the BK-deep slab in stage (Ah, Al, Bh, Bl), as lo hi + hi lo + hi hi.
template <bool A_KMAJOR>
__device__ __forceinline__ void mma_slab(const uint16_t* Ah, const uint16_t* Al, const uint16_t* Bh,
                                         const uint16_t* Bl, float (&acc)[MT][NT][4]) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, wm = warp / 4, wn = warp % 4;
  const int m = lane / 8, r = lane % 8;  // this lane's ldmatrix row: row r of matrix m
#pragma unroll
  for (int kk = 0; kk < BK; kk += 16) {
    // B fragments, two n-tiles per ldmatrix: matrices (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15).
    uint32_t bh[NT][2], bl[NT][2];
#pragma unroll
    for (int p = 0; p < NT; p += 2) {
      const int at = (kk + r + (m & 1) * 8) * (BN + PAD) + wn * 32 + p * 8 + (m >> 1) * 8;
      uint32_t t[4];
      ldsm_x4_t(t, Bh + at);
      bh[p][0] = t[0]; bh[p][1] = t[1]; bh[p + 1][0] = t[2]; bh[p + 1][1] = t[3];
      ldsm_x4_t(t, Bl + at);
      bl[p][0] = t[0]; bl[p][1] = t[1]; bl[p + 1][0] = t[2]; bl[p + 1][1] = t[3];
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      // A fragment: matrices (i 0-7, k 0-7), (i 8-15, k 0-7), (i 0-7, k 8-15), (i 8-15, k 8-15).
      const int i = wm * 64 + mt * 16;
      uint32_t ah[4], al[4];
      if (A_KMAJOR) {
        const int at = (kk + r + (m >> 1) * 8) * (BM + PAD) + i + (m & 1) * 8;
        ldsm_x4_t(ah, Ah + at);
        ldsm_x4_t(al, Al + at);
      } else {
        const int at = (i + r + (m & 1) * 8) * (BK + PAD) + kk + (m >> 1) * 8;
        ldsm_x4(ah, Ah + at);
        ldsm_x4(al, Al + at);
      }
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        // The small terms first: they are added while the accumulator is smallest.
        mma_bf16(acc[mt][nt], al, bh[nt][0], bh[nt][1]);
        mma_bf16(acc[mt][nt], ah, bl[nt][0], bl[nt][1]);
        mma_bf16(acc[mt][nt], ah, bh[nt][0], bh[nt][1]);
      }
    }
  }
}

// out[e] (this thread's ACC values, see tile_row / tile_col) = sum over k in [k0, k1) of
// op(A)(m0 + row, k) op(B)(k, n0 + col). k0 a multiple of BK. smem: TileSmem<A_KMAJOR>::bytes().
// Double-buffered: the next slab's global loads are in flight while the tensor cores run.
template <bool A_KMAJOR>
__device__ __forceinline__ void split_tile(const TileArgs& g, int m0, int n0, int k0, int k1, uint16_t* smem,
                                           float (&out)[ACC]) {
  using Sm = TileSmem<A_KMAJOR>;
  float* total = reinterpret_cast<float*>(smem + 2 * Sm::STAGE);  // [ACC][THREADS]: this thread's column
  Slab<A_KMAJOR ? BK : BM, A_KMAJOR ? BM : BK> sa;
  Slab<BK, BN> sb;
  auto load = [&](int k) {
    if (A_KMAJOR) sa.load(g.a, g.lda, nullptr, k, k1, m0, g.M, g.a_vec);
    else sa.load(g.a, g.lda, g.a_rows, m0, g.M, k, k1, g.a_vec);
    sb.load(g.b, g.ldb, nullptr, k, k1, n0, g.N, g.b_vec);
  };
  auto store = [&](int stage) {
    uint16_t* s = smem + stage * Sm::STAGE;
    sa.store(s, s + Sm::A_ELEMS);
    sb.store(s + 2 * Sm::A_ELEMS, s + 2 * Sm::A_ELEMS + Sm::B_ELEMS);
  };
  float acc[MT][NT][4];
  float* flat = &acc[0][0][0];
#pragma unroll
  for (int e = 0; e < ACC; e++) {
    flat[e] = 0.f;
    total[e * THREADS + threadIdx.x] = 0.f;
  }
  load(k0);
  store(0);
  __syncthreads();
  int slab = 0;
  for (int k = k0; k < k1; k += BK, slab++) {
    const bool more = k + BK < k1;
    if (more) load(k + BK);
    const uint16_t* s = smem + (slab & 1) * Sm::STAGE;
    mma_slab<A_KMAJOR>(s, s + Sm::A_ELEMS, s + 2 * Sm::A_ELEMS, s + 2 * Sm::A_ELEMS + Sm::B_ELEMS, acc);
    if (slab % FLUSH_SLABS == FLUSH_SLABS - 1 || !more) {
      // NOTE: only this thread touches its column of `total`, so no barrier is needed.
#pragma unroll
      for (int e = 0; e < ACC; e++) {
        total[e * THREADS + threadIdx.x] += flat[e];
        flat[e] = 0.f;
      }
    }
    if (more) store((slab + 1) & 1);
    __syncthreads();
  }
#pragma unroll
  for (int e = 0; e < ACC; e++) out[e] = total[e * THREADS + threadIdx.x];
}

// Row and column within the BM x BN tile of this thread's value e (the mma accumulator layout:
// value e = (mt * NT + nt) * 4 + q holds row g (+ 8 for q >= 2), column 2 t + q % 2 of mma tile (mt, nt)).
__device__ __forceinline__ int tile_row(int e) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  return warp / 4 * 64 + e / (NT * 4) * 16 + lane / 4 + (e % 4 >= 2) * 8;
}
__device__ __forceinline__ int tile_col(int e) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  return warp % 4 * 32 + e / 4 % NT * 8 + lane % 4 * 2 + e % 2;
}

// Whether a float pointer and row stride allow float4 loads.
__host__ __device__ __forceinline__ bool vec4_ok(const void* p, int64_t ld) {
  return ((uintptr_t)p % 16 == 0) && ld % 4 == 0;
}

}  // namespace skv_mma
