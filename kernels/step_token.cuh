// A decode step's new token in one row: its q and k rows to f32 with RoPE at the row's position,
// and its k and v appended to the row's tail. One routine for the fused step's append
// (decode_layer.cu, every head of a row) and the dense step's attention (sparse_attention.cu, the
// heads of one kv head), so both round the same way.
#pragma once
#include "attention.h"
#include "common.cuh"
#include "dtype.cuh"
#include "rope.cuh"

// Kv head h's rows of row r's tail, the token's included, as a segment.
__device__ __forceinline__ SkvSegment tail_segment(const SkvStep& s, const SkvStepRow& r, int h) {
  const size_t off = (size_t)h * r.tail_capacity * s.d * skv_dtype_size(s.kv_dtype);
  return SkvSegment{r.tail_k + off, r.tail_v + off, r.tail_count + 1, s.d};
}

// The attention task of kv head h of row r (attention.h), its q and segments not yet set: the
// output rows of h's query heads, the step's counters. NOTE: here and below the step's q, k, v and
// out come from io, never from s (launchers.h SkvStepIo): the caller loads it from device memory
// beside its row, so that the loads of q and k do not wait for another round trip.
__device__ __forceinline__ SkvAttnTask row_task(const SkvStep& s, const SkvStepIo& io, const SkvStepRow& r, int h) {
  SkvAttnTask t{};
  const int g = s.q_heads / s.kv_heads;
  t.out = reinterpret_cast<char*>(io.out) + ((size_t)r.input * s.q_heads + (size_t)h * g) * s.d * skv_dtype_size(s.io_dtype);
  t.out_dtype = s.io_dtype;
  t.counters = reinterpret_cast<double*>(s.counters);
  return t;
}

// nq query heads from qh, then nk kv heads from kh, of row r's token to f32 in x ([nq + nk][d]),
// rotated at r.position (rope.cu's arithmetic); cs: d floats for the (cos, sin) pairs. Called by
// every thread of the block; x is complete, and visible to the block, when it returns. NOTE: the
// frequencies and the q and k loads are all requested before any is used (the stage is a chain of
// memory round trips: 9 us at batch 1 with q, k and the frequencies one after another).
__device__ __forceinline__ void token_rows(const SkvStep& s, const SkvStepIo& io, const SkvStepRow& r, int qh, int nq, int kh,
                                           int nk, float* x, float* cs) {
  const int d = s.d, half = d / 2;
  const double* inv_freq = reinterpret_cast<const double*>(s.inv_freq);
  const double f0 = (int)threadIdx.x < half ? inv_freq[threadIdx.x] : 0.0;
  const void *q = reinterpret_cast<const void*>(io.q), *k = reinterpret_cast<const void*>(io.k);
  const size_t q0 = ((size_t)r.input * s.q_heads + qh) * d, k0 = ((size_t)r.input * s.kv_heads + kh) * d;
  batched<8>((nq + nk) * d, [&](int i) {
    return i < nq * d ? load_f32(q, s.io_dtype, q0 + i) : load_f32(k, s.io_dtype, k0 + i - nq * d);
  }, [&](int i, float v) { x[i] = v; });
  // Every head of the token sits at `position`: one rotation per pair.
  for (int i = threadIdx.x; i < half; i += blockDim.x)
    rope_rotation(r.position, i == (int)threadIdx.x ? f0 : inv_freq[i], &cs[2 * i], &cs[2 * i + 1]);
  __syncthreads();
  for (int w = threadIdx.x; w < (nq + nk) * half; w += blockDim.x) {
    const int row = w / half, i = w % half;
    rope_rotate(x + (size_t)row * d, half, i, s.rope_style, cs[2 * i], cs[2 * i + 1]);
  }
  __syncthreads();
}

// kf: the token's rotated k rows of kv heads [kh, kh + nk), to the tail at tail_count, and its v
// rows of those heads (from the input). NOTE: the value keeps its bits where the dtypes agree
// (convert_elem), so it is not batched through f32.
__device__ __forceinline__ void token_to_tail(const SkvStep& s, const SkvStepIo& io, const SkvStepRow& r, int kh, int nk,
                                              const float* kf) {
  const int d = s.d;
  auto tail_row = [&](int i) { return ((size_t)(kh + i / d) * r.tail_capacity + r.tail_count) * d + i % d; };
  for (int i = threadIdx.x; i < nk * d; i += blockDim.x) store_f32(reinterpret_cast<void*>(r.tail_k), s.kv_dtype, tail_row(i), kf[i]);
  const size_t v0 = ((size_t)r.input * s.kv_heads + kh) * d;
  for (int i = threadIdx.x; i < nk * d; i += blockDim.x)
    convert_elem(reinterpret_cast<const void*>(io.v), s.io_dtype, v0 + i, reinterpret_cast<void*>(r.tail_v), s.kv_dtype, tail_row(i));
}
