// RoPE in place with float64 angles. Exact sin/cos is the expensive part (more so in wasm libm), so
// a row's rotation is its block base times a per-offset table:
//   angle(base + k) = angle(base) + k * f  ->  (c, s) = (cb ck - sb sk, sb ck + cb sk).
// Block bases step by whole blocks in float64 from exact anchors every RESEED_BLOCKS blocks (at fixed
// multiples of the position, so rows in increasing order reuse them); only the final combine and the
// rotation run in f32 (error ~3e-7 relative).
#include <math.h>
#include "abi.h"
#include "simd.h"

namespace {
enum { PAIRS = 64, BLOCK = 32, RESEED_BLOCKS = 16 };

struct Rotations {
  float c[PAIRS], s[PAIRS];
};

// The per-row rotations of one pair block: exact bases, a float64 block step, an f32 offset table.
struct RopeState {
  int np;
  double bc[PAIRS], bs[PAIRS];          // rotation of the run base position, float64
  double stepc[PAIRS], steps[PAIRS];    // rotation by BLOCK positions
  float tc[BLOCK][PAIRS], ts[BLOCK][PAIRS];  // rotation by k positions, k < BLOCK
  float fbc[PAIRS], fbs[PAIRS];         // bc, bs in f32 for the combine
  bool table = false;

  void exact_base(const double* f, int64_t pos) {
    for (int i = 0; i < np; i++) {
      double a = (double)pos * f[i];
      bc[i] = cos(a); bs[i] = sin(a);
      fbc[i] = (float)bc[i]; fbs[i] = (float)bs[i];
    }
  }
  void build_table(const double* f) {  // lazily: only runs of consecutive positions need it
    for (int i = 0; i < np; i++) {
      double c1 = cos(f[i]), s1 = sin(f[i]), c = 1.0, s = 0.0;
      for (int k = 0; k < BLOCK; k++) {
        tc[k][i] = (float)c; ts[k][i] = (float)s;
        double cn = c * c1 - s * s1;
        s = s * c1 + c * s1;
        c = cn;
      }
      stepc[i] = cos(BLOCK * f[i]); steps[i] = sin(BLOCK * f[i]);
    }
    table = true;
  }
  void advance_base() {  // base += BLOCK positions, float64
    for (int i = 0; i < np; i++) {
      double cn = bc[i] * stepc[i] - bs[i] * steps[i];
      bs[i] = bs[i] * stepc[i] + bc[i] * steps[i];
      bc[i] = cn;
      fbc[i] = (float)bc[i]; fbs[i] = (float)bs[i];
    }
  }
  // Rotation of base + k, k < BLOCK, for every pair (f32x4).
  void combine(int k, Rotations& r) const {
    int i = 0;
    for (; i + 4 <= np; i += 4) {
      f32x4 cb = vload(fbc + i), sb = vload(fbs + i), ck = vload(tc[k] + i), sk = vload(ts[k] + i);
      vstore(r.c + i, vsub(vmul(cb, ck), vmul(sb, sk)));
      vstore(r.s + i, vfma(sb, ck, vmul(cb, sk)));
    }
    for (; i < np; i++) {
      r.c[i] = fbc[i] * tc[k][i] - fbs[i] * ts[k][i];
      r.s[i] = fbs[i] * tc[k][i] + fbc[i] * ts[k][i];
    }
  }
};

// x1' = x1 c - x2 s', x2' = x2 c + x1 s' with s' = dir * s, for np pairs; x1, x2 contiguous (rotate-half).
void rotate_half(float* x1, float* x2, const Rotations& r, float dir, int np) {
  const f32x4 vd = vsplat(dir);
  int i = 0;
  for (; i + 4 <= np; i += 4) {
    f32x4 a = vload(x1 + i), b = vload(x2 + i), c = vload(r.c + i), s = vmul(vd, vload(r.s + i));
    vstore(x1 + i, vsub(vmul(a, c), vmul(b, s)));
    vstore(x2 + i, vfma(a, s, vmul(b, c)));
  }
  for (; i < np; i++) {
    float a = x1[i], b = x2[i], s = dir * r.s[i];
    x1[i] = a * r.c[i] - b * s;
    x2[i] = b * r.c[i] + a * s;
  }
}

// Same for interleaved pairs (2i, 2i+1).
void rotate_interleaved(float* x, const Rotations& r, float dir, int np) {
  for (int i = 0; i < np; i++) {
    float a = x[2 * i], b = x[2 * i + 1], s = dir * r.s[i];
    x[2 * i] = a * r.c[i] - b * s;
    x[2 * i + 1] = b * r.c[i] + a * s;
  }
}
}  // namespace

SKV_EXPORT void skv_rope(float* x, int rows, int d, int ldx, const int32_t* positions,
                         const double* inv_freq, int style, int direction) {
  const int half = d / 2;
  const float dir = direction < 0 ? -1.f : 1.f;
  for (int p0 = 0; p0 < half; p0 += PAIRS) {
    RopeState st;
    st.np = half - p0 < PAIRS ? half - p0 : PAIRS;
    const double* f = inv_freq + p0;
    Rotations rot;
    int64_t prev = -1, base = -1;  // the previous row's position; the block base st holds (-1: none)
    for (int r = 0; r < rows; r++) {
      const int64_t pos = positions[r];
      if (pos != prev) {
        // NOTE: a rotation depends on its position only, never on where a run of rows started (so
        // a prompt rotated in one call or in several is the same, bit for bit): exact bases sit at
        // multiples of BLOCK * RESEED_BLOCKS, blocks step from there, offsets come from the table.
        const int64_t block = pos - pos % BLOCK, anchor = pos - pos % ((int64_t)BLOCK * RESEED_BLOCKS);
        if (base < anchor || base > block) {
          st.exact_base(f, anchor);
          base = anchor;
        }
        if (base < block && !st.table) st.build_table(f);
        while (base < block) {
          st.advance_base();
          base += BLOCK;
        }
        const int k = (int)(pos - block);
        if (k && !st.table) st.build_table(f);
        if (k) st.combine(k, rot);
        else for (int i = 0; i < st.np; i++) { rot.c[i] = st.fbc[i]; rot.s[i] = st.fbs[i]; }
      }
      prev = pos;
      float* row = x + (size_t)r * ldx;
      if (style == SKV_ROPE_INTERLEAVED) rotate_interleaved(row + 2 * p0, rot, dir, st.np);
      else rotate_half(row + p0, row + half + p0, rot, dir, st.np);
    }
  }
}
