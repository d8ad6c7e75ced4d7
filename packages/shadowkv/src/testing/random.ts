// Seeded randomness for synthetic workloads and tests.

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fills `out` (or a new Float64Array of n) with N(0, scale²) samples (Box-Muller). */
export function randn<T extends Float32Array | Float64Array = Float64Array>(n: number, rand: () => number, scale = 1, out?: T): T {
  const o = (out ?? new Float64Array(n)) as T;
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - rand())) * scale;
    const a = 2 * Math.PI * rand();
    o[i] = r * Math.cos(a);
    if (i + 1 < n) o[i + 1] = r * Math.sin(a);
  }
  return o;
}
