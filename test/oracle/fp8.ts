// fp8 values as the host tier keeps them (`fp8Values`), in float64 and written from the format's
// definition rather than from runtime/wasm/fp8.h: per token row, the scale 2^e with e the smallest
// integer such that max|v| * 2^-e <= 448, then each value's nearest E4M3 number (ties to even;
// past 448 saturates), times 2^e.

/** The E4M3 number nearest x (|x| within the format: 3 mantissa bits, subnormals at 2^-9 steps, 448 the largest). */
export function e4m3(x: number): number {
  const a = Math.abs(x);
  if (a >= 464) return Math.sign(x) * 448; // 464 is 448's tie with 480, which is not a number of the format
  let e = a < 2 ** -6 ? -6 : Math.floor(Math.log2(a));
  if (2 ** e > a) e--; // log2 of a power of two may land a hair off
  if (a >= 2 ** -6 && 2 ** (e + 1) <= a) e++;
  const step = 2 ** (Math.max(e, -6) - 3);
  const k = a / step, lo = Math.floor(k);
  const up = k - lo > 0.5 || (k - lo === 0.5 && lo % 2 === 1);
  return Math.sign(x) * (lo + (up ? 1 : 0)) * step;
}

/** A row of values as the fp8 tier returns it. */
export function fp8Row(row: Float64Array): Float64Array {
  const amax = row.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  let e = amax > 0 ? Math.ceil(Math.log2(amax / 448)) : -126;
  while (amax * 2 ** -e > 448) e++;
  while (amax > 0 && amax * 2 ** -(e - 1) <= 448) e--;
  e = Math.max(e, -126);
  return row.map((v) => e4m3(v * 2 ** -e) * 2 ** e);
}
