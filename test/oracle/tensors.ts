// Host tensor slices <-> per-head row vectors; the oracle works on rows so each step reads like the math.

export function checkSize(call: string, name: string, x: Float64Array, shape: number[]): void {
  const expected = shape.reduce((a, b) => a * b, 1);
  if (x.length !== expected) throw new Error(`${call}: ${name} has ${x.length} entries, expected [${shape.join(', ')}] = ${expected}`);
}

/** [heads, tokens, d] row-major -> rows[h][t] (copies). */
export function toHeadRows(x: Float64Array, heads: number, tokens: number, d: number): Float64Array[][] {
  return Array.from({ length: heads }, (_, h) =>
    Array.from({ length: tokens }, (_, t) => x.slice((h * tokens + t) * d, (h * tokens + t + 1) * d)),
  );
}

/** rows[h][t] -> [heads, tokens, d] row-major. */
export function fromHeadRows(rows: Float64Array[][], d: number): Float64Array {
  const tokens = rows[0]?.length ?? 0;
  const out = new Float64Array(rows.length * tokens * d);
  rows.forEach((head, h) => head.forEach((r, t) => out.set(r, (h * tokens + t) * d)));
  return out;
}

/** Position t of sequence index offset + t, i.e. [offset, offset + count). */
export function positionRange(offset: number, count: number): number[] {
  return Array.from({ length: count }, (_, t) => offset + t);
}
