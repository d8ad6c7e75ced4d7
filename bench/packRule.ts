// The packed host tier's rule (`packedValues`, runtime/wasm/pack.h), for the benchmarks that report
// how much of a workload packs: a chunk packs where every bf16 exponent field is 0 or within 14 of
// the chunk's largest.
import { fromNumbers, toFloat32, type Tensor } from '../packages/shadowkv/src/index.js';

/** Whether one chunk's bf16 values pack. */
export function packs(bits: Uint16Array): boolean {
  let top = 0;
  for (const v of bits) top = Math.max(top, (v >> 7) & 0xff);
  return bits.every((v) => {
    const e = (v >> 7) & 0xff;
    return e === 0 || (e !== 0xff && e >= top - 14);
  });
}

/** Chunks of C tokens of each of `heads` rows of values `[heads, n, d]` (any dtype, rounded to bf16): how many, how many pack. */
export function packedChunks(values: Tensor, heads: number, d: number, C: number): { packed: number; all: number } {
  const bits = fromNumbers(toFloat32(values), 'bf16') as Uint16Array;
  const n = bits.length / (heads * d);
  let packed = 0, all = 0;
  for (let h = 0; h < heads; h++) {
    for (let t = 0; t + C <= n; t += C, all++) if (packs(bits.subarray((h * n + t) * d, (h * n + t + C) * d))) packed++;
  }
  return { packed, all };
}

/** The bytes a fetch of every chunk moves against the storage dtype's: packed chunks 3/4. */
export const fetchRatio = (s: { packed: number; all: number }): number => (0.75 * s.packed + (s.all - s.packed)) / s.all;
