/** A 1-D pooling over positions, stride 1, window `kernel` (odd) centred on each position and cut at the ends. */
export function pool(x: Float64Array, kernel: number, kind: 'max' | 'avg'): Float64Array {
  const r = (kernel - 1) / 2;
  return x.map((_, t) => {
    let acc = kind === 'max' ? -Infinity : 0;
    const lo = Math.max(0, t - r);
    const hi = Math.min(x.length - 1, t + r);
    for (let j = lo; j <= hi; j++) acc = kind === 'max' ? Math.max(acc, x[j]!) : acc + x[j]!;
    return kind === 'max' ? acc : acc / (hi - lo + 1);
  });
}
