// Agreement between two outputs, as the demo, the benchmarks and the tests report it.

/** Cosine similarity of two equally long vectors (or of `[from, to)` of each). */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>, from = 0, to = a.length): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = from; i < to; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! ** 2;
    bb += b[i]! ** 2;
  }
  return ab / Math.sqrt(aa * bb);
}

/** ||a - b|| / ||b|| (or over `[from, to)` of each). */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>, from = 0, to = b.length): number {
  let num = 0;
  let den = 0;
  for (let i = from; i < to; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}
