// RoPE in place with float64 angles. sin/cos per (row, pair) dominate, so runs of consecutive
// positions advance the angle by one rotation per row instead of calling sin/cos again.
#include <math.h>
#include "abi.h"

namespace {
enum { PAIRS = 64, RESEED = 16 };  // pairs per pass; exact sin/cos at least every RESEED rows
}

SKV_EXPORT void skv_rope(float* x, int rows, int d, int ldx, const int32_t* positions,
                         const double* inv_freq, int style, int direction) {
  int half = d / 2;
  double dir = direction < 0 ? -1.0 : 1.0;
  // Pairs are handled PAIRS at a time so the angle state lives on the stack.
  for (int p0 = 0; p0 < half; p0 += PAIRS) {
    int np = half - p0 < PAIRS ? half - p0 : PAIRS;
    double c[PAIRS], s[PAIRS], c1[PAIRS], s1[PAIRS];  // angle state; one-step rotation
    for (int i = 0; i < np; i++) { c1[i] = cos(inv_freq[p0 + i]); s1[i] = sin(inv_freq[p0 + i]); }
    int64_t prev = 0;
    int since_exact = RESEED;  // forces an exact start
    for (int r = 0; r < rows; r++) {
      int64_t pos = positions[r];
      if (since_exact < RESEED && pos == prev + 1) {
        // NOTE: (c, s) <- rotate by inv_freq; rounding grows by ~1e-16 per step, reset every RESEED.
        for (int i = 0; i < np; i++) {
          double cn = c[i] * c1[i] - s[i] * s1[i];
          s[i] = s[i] * c1[i] + c[i] * s1[i];
          c[i] = cn;
        }
        since_exact++;
      } else if (!(since_exact < RESEED && pos == prev)) {
        for (int i = 0; i < np; i++) {
          double a = (double)pos * inv_freq[p0 + i];
          c[i] = cos(a); s[i] = sin(a);
        }
        since_exact = 0;
      }
      prev = pos;
      float* row = x + (size_t)r * ldx;
      for (int i = 0; i < np; i++) {
        int i1 = style == SKV_ROPE_INTERLEAVED ? 2 * (p0 + i) : p0 + i;
        int i2 = style == SKV_ROPE_INTERLEAVED ? i1 + 1 : i1 + half;
        double x1 = row[i1], x2 = row[i2], sn = dir * s[i];
        row[i1] = (float)(x1 * c[i] - x2 * sn);
        row[i2] = (float)(x2 * c[i] + x1 * sn);
      }
    }
  }
}
