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

// ---- exp ----
// exp(x) by range reduction x = n ln2 + r and a degree-5 polynomial for e^r (Cephes expf, ~2 ulp);
// exactly 0 below -87.3 (so masked -inf logits stay masked), inputs above 88.3 clamp. NaN stays NaN,
// as in the SIMD lanes: a NaN logit of finite inputs (products of +-Infinity in f32) must reach the
// sums, whose finiteness check then redoes that query or head in float64.
enum { EXP_POLY_TERMS = 6 };
static const float EXP_POLY[EXP_POLY_TERMS] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                               4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
static const float EXP_LO = -87.3f, EXP_HI = 88.3f, LOG2E = 1.44269504089f;
static const float LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;

static inline float exp_poly(float x) {
  if (!(x >= EXP_LO)) return x == x ? 0.f : x;
  if (x > EXP_HI) x = EXP_HI;
  float n = __builtin_roundf(x * LOG2E);
  float r = x - n * LN2_HI - n * LN2_LO;
  float p = EXP_POLY[0];
  for (int i = 1; i < EXP_POLY_TERMS; i++) p = p * r + EXP_POLY[i];
  float y = p * r * r + r + 1.f;
  int bits = ((int)n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, 4);
  return y * scale;
}

#if defined(__wasm_simd128__)
static inline f32x4 vexp(f32x4 x) {
  v128_t under = wasm_f32x4_lt(x, wasm_f32x4_splat(EXP_LO));
  x = wasm_f32x4_min(wasm_f32x4_max(x, wasm_f32x4_splat(EXP_LO)), wasm_f32x4_splat(EXP_HI));
  f32x4 n = wasm_f32x4_nearest(wasm_f32x4_mul(x, wasm_f32x4_splat(LOG2E)));
  f32x4 r = vsub(vsub(x, vmul(n, vsplat(LN2_HI))), vmul(n, vsplat(LN2_LO)));
  f32x4 p = vsplat(EXP_POLY[0]);
  for (int i = 1; i < EXP_POLY_TERMS; i++) p = vfma(p, r, vsplat(EXP_POLY[i]));
  f32x4 y = vadd(vfma(vmul(p, r), r, r), vsplat(1.f));
  v128_t scale = wasm_i32x4_shl(wasm_i32x4_add(wasm_i32x4_trunc_sat_f32x4(n), wasm_i32x4_splat(127)), 23);
  return wasm_v128_andnot(vmul(y, scale), under);
}
#else
// Native and scalar builds: the same polynomial lane by lane (g++ vectorizes this loop).
static inline f32x4 vexp(f32x4 x) {
  float in[4], out[4];
  vstore(in, x);
  for (int i = 0; i < 4; i++) out[i] = exp_poly(in[i]);
  return vload(out);
}
#endif

// x[i] = exp(x[i] - shift) over n elements; returns their sum.
static inline float vexp_shifted(float* x, int n, float shift) {
  f32x4 vs = vsplat(shift), sum = vsplat(0.f);
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    f32x4 e = vexp(vsub(vload(x + i), vs));
    vstore(x + i, e);
    sum = vadd(sum, e);
  }
  float s = vhsum(sum);
  for (; i < n; i++) s += (x[i] = exp_poly(x[i] - shift));
  return s;
}

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

// max(init, x[0:n]). NOTE: a NaN in x may or may not win; callers treat the row as NaN either way.
static inline float vmaxval(const float* x, int n, float init) {
  f32x4 mx = vsplat(init);
  int i = 0;
  for (; i + 4 <= n; i += 4) mx = vmax(mx, vload(x + i));
  float lanes[4];
  vstore(lanes, mx);
  float m = init;
  for (int j = 0; j < 4; j++) m = lanes[j] > m ? lanes[j] : m;
  for (; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

// y *= alpha over n elements.
static inline void vscale(float alpha, float* y, int n) {
  f32x4 va = vsplat(alpha);
  int i = 0;
  for (; i + 4 <= n; i += 4) vstore(y + i, vmul(va, vload(y + i)));
  for (; i < n; i++) y[i] *= alpha;
}
