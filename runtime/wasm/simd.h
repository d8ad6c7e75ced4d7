// A 4-lane f32 vector, three ways: wasm SIMD intrinsics (-msimd128), GCC vector extensions (native
// g++), and plain scalars (the plain wasm build). Kernels are written once against this header.
#pragma once
#include <stddef.h>
#include <string.h>

#if defined(__wasm_simd128__)
#include <wasm_simd128.h>
#define SKV_SIMD_KIND "wasm-simd128"
typedef v128_t f32x4;
static inline f32x4 vload(const float* p) { return wasm_v128_load(p); }
static inline void vstore(float* p, f32x4 a) { wasm_v128_store(p, a); }
static inline f32x4 vsplat(float a) { return wasm_f32x4_splat(a); }
static inline f32x4 vadd(f32x4 a, f32x4 b) { return wasm_f32x4_add(a, b); }
static inline f32x4 vsub(f32x4 a, f32x4 b) { return wasm_f32x4_sub(a, b); }
static inline f32x4 vmul(f32x4 a, f32x4 b) { return wasm_f32x4_mul(a, b); }
static inline f32x4 vmax(f32x4 a, f32x4 b) { return wasm_f32x4_max(a, b); }
// No fused multiply-add in wasm SIMD (relaxed-simd is not assumed): mul then add.
static inline f32x4 vfma(f32x4 a, f32x4 b, f32x4 c) { return wasm_f32x4_add(c, wasm_f32x4_mul(a, b)); }
static inline float vhsum(f32x4 a) {
  return (wasm_f32x4_extract_lane(a, 0) + wasm_f32x4_extract_lane(a, 1)) +
         (wasm_f32x4_extract_lane(a, 2) + wasm_f32x4_extract_lane(a, 3));
}

#elif defined(__GNUC__) && !defined(__wasm__)
#define SKV_SIMD_KIND "gcc-vector"
typedef float f32x4 __attribute__((vector_size(16)));
// memcpy keeps loads legal for any alignment; the compiler turns it into one unaligned load.
static inline f32x4 vload(const float* p) { f32x4 a; memcpy(&a, p, 16); return a; }
static inline void vstore(float* p, f32x4 a) { memcpy(p, &a, 16); }
static inline f32x4 vsplat(float a) { return f32x4{a, a, a, a}; }
static inline f32x4 vadd(f32x4 a, f32x4 b) { return a + b; }
static inline f32x4 vsub(f32x4 a, f32x4 b) { return a - b; }
static inline f32x4 vmul(f32x4 a, f32x4 b) { return a * b; }
static inline f32x4 vmax(f32x4 a, f32x4 b) { return a > b ? a : b; }
// Contracted to a hardware FMA under -ffp-contract=fast (the benchmark build).
static inline f32x4 vfma(f32x4 a, f32x4 b, f32x4 c) { return a * b + c; }
static inline float vhsum(f32x4 a) { return (a[0] + a[1]) + (a[2] + a[3]); }

#else
#define SKV_SIMD_KIND "scalar"
struct f32x4 { float v[4]; };
static inline f32x4 vload(const float* p) { f32x4 a; memcpy(a.v, p, 16); return a; }
static inline void vstore(float* p, f32x4 a) { memcpy(p, a.v, 16); }
static inline f32x4 vsplat(float a) { return f32x4{{a, a, a, a}}; }
#define SKV_LANEWISE(name, expr) \
  static inline f32x4 name(f32x4 a, f32x4 b) { f32x4 r; for (int i = 0; i < 4; i++) r.v[i] = (expr); return r; }
SKV_LANEWISE(vadd, a.v[i] + b.v[i])
SKV_LANEWISE(vsub, a.v[i] - b.v[i])
SKV_LANEWISE(vmul, a.v[i] * b.v[i])
SKV_LANEWISE(vmax, a.v[i] > b.v[i] ? a.v[i] : b.v[i])
#undef SKV_LANEWISE
static inline f32x4 vfma(f32x4 a, f32x4 b, f32x4 c) {
  f32x4 r; for (int i = 0; i < 4; i++) r.v[i] = c.v[i] + a.v[i] * b.v[i]; return r;
}
static inline float vhsum(f32x4 a) { return (a.v[0] + a.v[1]) + (a.v[2] + a.v[3]); }
#endif

// ---- the two loops of attention and scoring ----

// dot(a, b) over n elements; 16 lanes of partial sums hide the add latency.
static inline float vdot(const float* a, const float* b, int n) {
  f32x4 s0 = vsplat(0.f), s1 = s0, s2 = s0, s3 = s0;
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = vfma(vload(a + i), vload(b + i), s0);
    s1 = vfma(vload(a + i + 4), vload(b + i + 4), s1);
    s2 = vfma(vload(a + i + 8), vload(b + i + 8), s2);
    s3 = vfma(vload(a + i + 12), vload(b + i + 12), s3);
  }
  for (; i + 4 <= n; i += 4) s0 = vfma(vload(a + i), vload(b + i), s0);
  float s = vhsum(vadd(vadd(s0, s1), vadd(s2, s3)));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

// y += alpha * x over n elements.
static inline void vaxpy(float alpha, const float* x, float* y, int n) {
  f32x4 va = vsplat(alpha);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    vstore(y + i, vfma(va, vload(x + i), vload(y + i)));
    vstore(y + i + 4, vfma(va, vload(x + i + 4), vload(y + i + 4)));
  }
  for (; i + 4 <= n; i += 4) vstore(y + i, vfma(va, vload(x + i), vload(y + i)));
  for (; i < n; i++) y[i] += alpha * x[i];
}

// y *= alpha over n elements.
static inline void vscale(float alpha, float* y, int n) {
  f32x4 va = vsplat(alpha);
  int i = 0;
  for (; i + 4 <= n; i += 4) vstore(y + i, vmul(va, vload(y + i)));
  for (; i < n; i++) y[i] *= alpha;
}
