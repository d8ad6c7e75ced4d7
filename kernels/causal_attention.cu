// Prefill attention of one kv group: query row i of each head sees keys [0, offset + i]. A block
// takes R query rows of all g heads (R*g query vectors, as the wasm op's passes), so each key
// tile is staged once for all of them. Mirrors runtime/wasm/causal_attention.cc.
// Long prefills over bf16 keys and values (d = 64 or 128, from 2^30 multiply-adds) take a
// flash-attention forward on the tensor cores instead (FlashCausalKernel below): the same online
// softmax (skv_exp, masked logits -inf, the same rescaling), with the f32 queries and
// probabilities split into bf16 hi + lo against the stored bf16 keys and values (two products
// each), so logits and outputs stay within ~1e-5 of the f32 kernel's.
#include "attend_f64.cuh"
#include "attention.h"
#include "mma.cuh"
#include "online_softmax.cuh"

enum { CAUSAL_QUERIES = 16 };  // query vectors (rows x heads) per block

// Row i of head j again in float64 (attend_f64), by one warp: q, out [g x Sq x d] f32; keys and
// values [offset + Sq x d].
__device__ __forceinline__ void redo_row(const float* q, int Sq, int d, float scale, int offset, const void* k, const void* v,
                                         int kv_dtype, float* out, int j, int i) {
  const SkvSegment seen{reinterpret_cast<uint64_t>(k), reinterpret_cast<uint64_t>(v), offset + i + 1, d};
  const size_t at = ((size_t)j * Sq + i) * d;
  attend_f64(q + at, d, scale, &seen, 1, seen.n, kv_dtype, out, SKV_F32, at);
}

__global__ void __launch_bounds__(ATTN_THREADS) CausalAttentionKernel(const float* q, int g, int Sq, int d, float scale,
                                                                      int offset, const void* k, const void* v,
                                                                      int kv_dtype, int R, float* out) {
  extern __shared__ float smem[];
  const int i0 = blockIdx.x * R;
  const int rr = min(R, Sq - i0);
  AttnState s = attn_state(smem, rr * g, d);  // query vector r * g + j is head j, row i0 + r
  for (int i = threadIdx.x; i < rr * g * d; i += blockDim.x) {
    const int qv = i / d, e = i % d, r = qv / g, j = qv % g;
    s.q[i] = scale * q[((size_t)j * Sq + i0 + r) * d + e];
  }
  for (int qv = threadIdx.x; qv < rr * g; qv += blockDim.x) s.vis[qv] = offset + i0 + qv / g + 1;
  attn_reset(s);
  __syncthreads();
  const int64_t nkeys = (int64_t)offset + i0 + rr;  // keys the last row of the block sees
  const size_t esize = kv_dtype == SKV_F32 ? 4 : 2;
  for (int64_t t0 = 0; t0 < nkeys; t0 += ATTN_TILE) {
    const int n = (int)skv_min64(ATTN_TILE, nkeys - t0);
    for (int i = threadIdx.x; i < n * d; i += blockDim.x) {
      const int64_t row = t0 + i / d;
      attn_stage_row(s, i / d, static_cast<const char*>(k) + row * d * esize, static_cast<const char*>(v) + row * d * esize,
                     kv_dtype, i % d);
    }
    __syncthreads();
    attn_tile(s, n, t0);
  }
  // out_j = acc_j / l_j (every row sees a key). s.f, free now, holds 1 / l_j, or NaN for a vector
  // whose f32 softmax overflowed, which a warp then redoes in float64 over its visible keys.
  for (int qv = threadIdx.x; qv < rr * g; qv += blockDim.x) s.f[qv] = attn_result_ok(s.m[qv], s.l[qv]) ? 1.f / s.l[qv] : NAN;
  __syncthreads();
  bool bad = false;
  for (int i = threadIdx.x; i < rr * g * d; i += blockDim.x) {
    const int qv = i / d, e = i % d, r = qv / g, j = qv % g;
    const float o = s.acc[i] * s.f[qv];
    if (!isfinite(o)) s.f[qv] = NAN, bad = true;
    out[((size_t)j * Sq + i0 + r) * d + e] = o;
  }
  if (!__syncthreads_or(bad)) return;
  for (int qv = threadIdx.x / 32; qv < rr * g; qv += blockDim.x / 32)
    if (isnan(s.f[qv])) redo_row(q, Sq, d, scale, offset, k, v, kv_dtype, out, qv % g, i0 + qv / g);
}

namespace {

using skv_mma::cp_async16;
using skv_mma::ldsm_x4;
using skv_mma::ldsm_x4_t;
using skv_mma::mma_bf16;
using skv_mma::split_bf16x2;

// A block: FA_ROWS query rows of one head, 4 warps of 16 rows; keys and values in tiles of FA_KEYS.
enum { FA_ROWS = 64, FA_KEYS = 64, FA_THREADS = 128, FA_PAD = 8 };

// Shared memory: two stages of a key tile and a value tile ([FA_KEYS][D + FA_PAD] bf16 each); the
// queries' hi and lo parts are staged in the first two before the loop.
template <int D>
constexpr size_t flash_smem_bytes() { return sizeof(uint16_t) * 4 * FA_KEYS * (D + FA_PAD); }

// Block (x, j): query rows i0.. of head j (heaviest blocks first: the last rows see the most keys).
// q, out [g x Sq x D] f32; k, v [offset + Sq x D] bf16 bits.
template <int D>
__global__ void __launch_bounds__(FA_THREADS) FlashCausalKernel(const float* q, int Sq, float scale, int offset,
                                                                const uint16_t* k, const uint16_t* v, float* out) {
  extern __shared__ __align__(16) uint16_t fsm[];
  constexpr int LD = D + FA_PAD, TILE = FA_KEYS * LD, KD = D / 16, NO = D / 8, NS = FA_KEYS / 8;
  const int j = blockIdx.y, i0 = (gridDim.x - 1 - blockIdx.x) * FA_ROWS, rr = min(FA_ROWS, Sq - i0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
  const int m = lane / 8, r = lane % 8;  // this lane's ldmatrix row: row r of matrix m
  // 1. Queries times the scale (f32, as the SIMT kernel), split hi + lo, to registers as A fragments.
  for (int c = threadIdx.x; c < FA_ROWS * D / 4; c += FA_THREADS) {
    const int row = c / (D / 4), col = c % (D / 4) * 4;
    float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
    if (row < rr) x = *reinterpret_cast<const float4*>(q + ((size_t)j * Sq + i0 + row) * D + col);
    uint32_t h0, l0, h1, l1;
    split_bf16x2(scale * x.x, scale * x.y, h0, l0);
    split_bf16x2(scale * x.z, scale * x.w, h1, l1);
    *reinterpret_cast<uint2*>(fsm + row * LD + col) = make_uint2(h0, h1);
    *reinterpret_cast<uint2*>(fsm + TILE + row * LD + col) = make_uint2(l0, l1);
  }
  __syncthreads();
  uint32_t qh[KD][4], ql[KD][4];
#pragma unroll
  for (int kd = 0; kd < KD; kd++) {
    const int at = (warp * 16 + r + (m & 1) * 8) * LD + kd * 16 + (m >> 1) * 8;
    ldsm_x4(qh[kd], fsm + at);
    ldsm_x4(ql[kd], fsm + TILE + at);
  }
  __syncthreads();  // the staging space becomes the key and value stages
  // 2. Tiles of keys and values, double-buffered; rows past the last key read as zeros.
  const int nkeys = offset + i0 + rr, ntiles = (nkeys + FA_KEYS - 1) / FA_KEYS;
  auto load_tile = [&](int t) {
    uint16_t* ks = fsm + (t & 1) * 2 * TILE;
    for (int c = threadIdx.x; c < FA_KEYS * D / 8; c += FA_THREADS) {
      const int row = c / (D / 8), col = c % (D / 8) * 8, key = t * FA_KEYS + row;
      const size_t at = key < nkeys ? (size_t)key * D + col : 0;
      cp_async16(ks + row * LD + col, k + at, key < nkeys ? 16 : 0);
      cp_async16(ks + TILE + row * LD + col, v + at, key < nkeys ? 16 : 0);
    }
    skv_mma::cp_async_commit();
  };
  const int row0 = i0 + warp * 16;                       // this warp's first query row
  const int last0 = offset + row0 + gq, last1 = last0 + 8;  // the last key this thread's two rows see
  float o[NO][4] = {}, mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f};
  load_tile(0);
  for (int t = 0; t < ntiles; t++) {
    if (t + 1 < ntiles) {
      load_tile(t + 1);
      skv_mma::cp_async_wait<1>();
    } else {
      skv_mma::cp_async_wait<0>();
    }
    __syncthreads();
    const int t0 = t * FA_KEYS;
    if (t0 <= offset + row0 + 15) {  // NOTE: else the whole tile is past this warp's rows: nothing changes
      const uint16_t* ks = fsm + (t & 1) * 2 * TILE;
      const uint16_t* vs = ks + TILE;
      // 3. Logits of 16 rows x FA_KEYS keys: (q hi + q lo) k, k as B from its rows (ldmatrix, no transpose).
      float s[NS][4] = {};
#pragma unroll
      for (int kd = 0; kd < KD; kd++)
#pragma unroll
        for (int p = 0; p < NS; p += 2) {
          uint32_t b[4];  // matrices (keys p*8.., d 0-7), (keys p*8.., d 8-15), (keys p*8+8.., d 0-7), (.., d 8-15)
          ldsm_x4(b, ks + (p * 8 + r + (m >> 1) * 8) * LD + kd * 16 + (m & 1) * 8);
          mma_bf16(s[p], ql[kd], b[0], b[1]);
          mma_bf16(s[p], qh[kd], b[0], b[1]);
          mma_bf16(s[p + 1], ql[kd], b[2], b[3]);
          mma_bf16(s[p + 1], qh[kd], b[2], b[3]);
        }
      // 4. Causal mask, the tile's row max (over the quad of lanes that share a row), new running max.
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < NS; nt++)
#pragma unroll
        for (int c = 0; c < 4; c++) {
          const int key = t0 + nt * 8 + 2 * tq + (c & 1);
          if (key > (c < 2 ? last0 : last1)) s[nt][c] = -INFINITY;
          mx[c >> 1] = s[nt][c] > mx[c >> 1] ? s[nt][c] : mx[c >> 1];
        }
      float f[2], sum[2] = {0.f, 0.f};
#pragma unroll
      for (int h = 0; h < 2; h++) {
#pragma unroll
        for (int o2 = 1; o2 < 4; o2 <<= 1) {
          const float w = __shfl_xor_sync(0xffffffffu, mx[h], o2);
          mx[h] = w > mx[h] ? w : mx[h];
        }
        const float mn = mx[h] > mrow[h] ? mx[h] : mrow[h];
        f[h] = mn > mrow[h] ? skv_exp(mrow[h] - mn) : 1.f;  // 0 when m was -inf; 1 while nothing is visible
        mrow[h] = mn;
      }
      // 5. p = exp(logit - m), split hi + lo as A fragments: the logits' accumulator layout is the A layout.
      uint32_t ph[NS / 2][4], pl[NS / 2][4];
#pragma unroll
      for (int nt = 0; nt < NS; nt++) {
#pragma unroll
        for (int c = 0; c < 4; c++) {
          const float mr = mrow[c >> 1];
          const float p = mr == -INFINITY ? 0.f : skv_exp(s[nt][c] - mr);
          s[nt][c] = p;
          sum[c >> 1] += p;
        }
        split_bf16x2(s[nt][0], s[nt][1], ph[nt / 2][(nt & 1) * 2], pl[nt / 2][(nt & 1) * 2]);
        split_bf16x2(s[nt][2], s[nt][3], ph[nt / 2][(nt & 1) * 2 + 1], pl[nt / 2][(nt & 1) * 2 + 1]);
      }
      lrow[0] = lrow[0] * f[0] + sum[0];
      lrow[1] = lrow[1] * f[1] + sum[1];
      // 6. o = o f + p v, four output tiles at a time: their products sum in a fresh accumulator
      //    (8 mma), then join o rounded to nearest (mma.cuh: the tensor cores truncate).
#pragma unroll
      for (int n0 = 0; n0 < NO; n0 += 4) {
        float acc[4][4] = {};
#pragma unroll
        for (int kk = 0; kk < FA_KEYS / 16; kk++)
#pragma unroll
          for (int p = 0; p < 4; p += 2) {
            uint32_t b[4];  // matrices (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 8-15)
            ldsm_x4_t(b, vs + (kk * 16 + r + (m & 1) * 8) * LD + (n0 + p + (m >> 1)) * 8);
            mma_bf16(acc[p], pl[kk], b[0], b[1]);
            mma_bf16(acc[p], ph[kk], b[0], b[1]);
            mma_bf16(acc[p + 1], pl[kk], b[2], b[3]);
            mma_bf16(acc[p + 1], ph[kk], b[2], b[3]);
          }
#pragma unroll
        for (int x = 0; x < 4; x++)
#pragma unroll
          for (int c = 0; c < 4; c++) o[n0 + x][c] = o[n0 + x][c] * f[c >> 1] + acc[x][c];
      }
    }
    __syncthreads();  // the stage just read is the one the next iteration loads into
  }
  // 7. out = o / l over the quad's partial sums (every row sees a key). A row whose f32 softmax
  //    overflowed is redone in float64 by the warp.
  bool bad[2] = {false, false};
#pragma unroll
  for (int h = 0; h < 2; h++) {
    lrow[h] += __shfl_xor_sync(0xffffffffu, lrow[h], 1);
    lrow[h] += __shfl_xor_sync(0xffffffffu, lrow[h], 2);
    const int i = row0 + gq + h * 8;
    if (i - i0 >= rr) continue;
    const float inv = attn_result_ok(mrow[h], lrow[h]) ? 1.f / lrow[h] : NAN;
    float* dst = out + ((size_t)j * Sq + i) * D + 2 * tq;
#pragma unroll
    for (int nt = 0; nt < NO; nt++) {
      dst[nt * 8] = o[nt][h * 2] * inv;
      dst[nt * 8 + 1] = o[nt][h * 2 + 1] * inv;
      bad[h] = bad[h] || !isfinite(dst[nt * 8]) || !isfinite(dst[nt * 8 + 1]);
    }
  }
#pragma unroll
  for (int h = 0; h < 2; h++) {
    // NOTE: every lane shuffles (a `||` would skip the shuffle in lanes already bad: undefined).
    bad[h] |= (bool)__shfl_xor_sync(0xffffffffu, (int)bad[h], 1);
    bad[h] |= (bool)__shfl_xor_sync(0xffffffffu, (int)bad[h], 2);
    unsigned rows = __ballot_sync(0xffffffffu, bad[h] && tq == 0);
    if (rows) __syncwarp();  // the quads' stores come before the redo's
    for (; rows; rows &= rows - 1) redo_row(q, Sq, D, scale, offset, k, v, SKV_BF16, out, j, row0 + (__ffs(rows) - 1) / 4 + h * 8);
  }
}

template <int D>
cudaError_t flash_causal(const float* q, int g, int Sq, float scale, int offset, const void* k, const void* v, float* out,
                         cudaStream_t stream) {
  const size_t smem = flash_smem_bytes<D>();
  SKV_CUDA_CALL(skv_smem_optin(FlashCausalKernel<D>, smem));
  const dim3 grid((unsigned)skv_ceil_div(Sq, FA_ROWS), (unsigned)g);
  FlashCausalKernel<D><<<grid, FA_THREADS, smem, stream>>>(q, Sq, scale, offset, static_cast<const uint16_t*>(k),
                                                          static_cast<const uint16_t*>(v), out);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}

// The tensor-core path: bf16 keys and values, d = 64 or 128, 16-byte aligned rows, a long prefill.
bool flash_fits(const float* q, int g, int Sq, int d, int offset, const void* k, const void* v, int kv_dtype) {
  const bool aligned = (uintptr_t)q % 16 == 0 && (uintptr_t)k % 16 == 0 && (uintptr_t)v % 16 == 0;
  const int64_t macs = 2 * (int64_t)g * Sq * ((int64_t)offset + (Sq + 1) / 2) * d;
  return kv_dtype == SKV_BF16 && (d == 64 || d == 128) && aligned && g <= SKV_MAX_BLOCKS &&
         macs >= skv_mma::SPLIT_MIN_MACS;
}

// Query rows per block of the f32 path.
int causal_rows(int g) { return CAUSAL_QUERIES / g > 0 ? CAUSAL_QUERIES / g : 1; }

}  // namespace

cudaError_t CausalAttentionFits(int g, int d, SkvSmemFit* fit) {
  return skv_smem_fit(CausalAttentionKernel, attn_smem_bytes(causal_rows(g) * g, d), "prefill attention", fit);
}

cudaError_t CausalAttention(const float* q, int g, int Sq, int d, float scale, int offset, const void* k,
                            const void* v, int kv_dtype, float* out, cudaStream_t stream) {
  if (g <= 0 || Sq <= 0 || d <= 0) return cudaSuccess;
  if (flash_fits(q, g, Sq, d, offset, k, v, kv_dtype))
    return d == 64 ? flash_causal<64>(q, g, Sq, scale, offset, k, v, out, stream)
                   : flash_causal<128>(q, g, Sq, scale, offset, k, v, out, stream);
  const int R = causal_rows(g);
  const size_t smem = attn_smem_bytes(R * g, d);
  SKV_CUDA_CALL(skv_smem_optin(CausalAttentionKernel, smem));
  CausalAttentionKernel<<<(unsigned)skv_ceil_div(Sq, R), ATTN_THREADS, smem, stream>>>(q, g, Sq, d, scale, offset, k, v,
                                                                                      kv_dtype, R, out);
  SKV_LAUNCH_CHECK();
  return cudaSuccess;
}
