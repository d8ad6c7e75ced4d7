// Rotary position embedding in float64, exactly as docs/algorithm.md "Tensors and positions" states it.
import type { OracleRope, RopeStyle } from './types.js';

/** `invFreq[i] = 1 / theta^(2i/d)`, i < d/2, then Llama-3 scaling when `rope.scaling` is set. */
export function ropeFrequencies(headDim: number, rope: OracleRope): Float64Array {
  const invFreq = Float64Array.from({ length: headDim / 2 }, (_, i) => 1 / Math.pow(rope.theta, (2 * i) / headDim));
  const s = rope.scaling;
  if (!s) return invFreq;
  // Same three bands as HF `_compute_llama3_parameters`: long wavelengths are divided by `factor`,
  // short ones kept, and the band in between interpolated linearly in 1 / wavelength.
  const lowFreqWavelen = s.originalMaxPositions / s.lowFreqFactor;
  const highFreqWavelen = s.originalMaxPositions / s.highFreqFactor;
  return invFreq.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highFreqWavelen) return f;
    if (wavelen > lowFreqWavelen) return f / s.factor;
    const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * (f / s.factor) + smooth * f;
  });
}

/** The two dims that rotate together with frequency i. */
export function ropePair(i: number, headDim: number, style: RopeStyle): [number, number] {
  return style === 'half' ? [i, i + headDim / 2] : [2 * i, 2 * i + 1];
}

/**
 * Rotates each row of x [T, d] by its position: `x1' = x1 cos a - x2 sin a`, `x2' = x2 cos a + x1 sin a`
 * with `a = direction * pos * invFreq[i]`; direction -1 is the inverse rotation.
 */
export function applyRope(
  x: Float64Array,
  positions: ArrayLike<number>,
  invFreq: Float64Array,
  style: RopeStyle,
  direction: 1 | -1 = 1,
): Float64Array {
  const d = invFreq.length * 2;
  if (x.length !== positions.length * d) throw new Error(`applyRope: x has ${x.length} entries, expected ${positions.length} x ${d}`);
  const out = new Float64Array(x.length);
  for (let t = 0; t < positions.length; t++) {
    for (let i = 0; i < d / 2; i++) {
      const a = direction * positions[t] * invFreq[i];
      const [p, q] = ropePair(i, d, style);
      const x1 = x[t * d + p];
      const x2 = x[t * d + q];
      out[t * d + p] = x1 * Math.cos(a) - x2 * Math.sin(a);
      out[t * d + q] = x2 * Math.cos(a) + x1 * Math.sin(a);
    }
  }
  return out;
}

/** One vector at one position. */
export function ropeVector(x: Float64Array, position: number, invFreq: Float64Array, style: RopeStyle, direction: 1 | -1 = 1): Float64Array {
  return applyRope(x, [position], invFreq, style, direction);
}
