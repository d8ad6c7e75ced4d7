import { at, type Device, type Segment, type View } from '../../backends/Device.js';
import { ConfigError } from '../../errors/ConfigError.js';
import type { ExactRegion } from '../ExactRegion.js';
import { fmt } from '../validate.js';

/** Runs `[first, n)` of consecutive rows among ascending rows (or chunks of `width` rows), each one attention segment. */
export function rowRuns(ids: ArrayLike<number>, width = 1): [number, number][] {
  const runs: [number, number][] = [];
  for (let i = 0; i < ids.length; i++) {
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === ids[i]! * width) last[1] += width;
    else runs.push([ids[i]! * width, width]);
  }
  return runs;
}

/**
 * Exact attention of kv head h's query group (`q`, `out`: the row's `[Hq, d]` f32) over runs of the
 * region's rows; returns the tokens attended. The building block of policies that choose rows.
 */
export function attendRows(device: Device, region: ExactRegion, h: number, g: number, scale: number, runs: readonly (readonly [number, number])[], q: View, out: View): number {
  const { d } = region;
  if (!(Number.isInteger(h) && h >= 0 && h < region.heads)) throw new ConfigError(`attendRows(): kv head ${fmt(h)} is outside [0, ${region.heads})`);
  for (const run of runs) {
    const [first, n] = run;
    // NOTE: a run past the rows held would read other memory of the device, and attend it.
    if (!(Number.isInteger(first) && Number.isInteger(n) && first >= 0 && n >= 0 && first + n <= region.count)) {
      throw new ConfigError(`attendRows(): run [${fmt(first)}, ${fmt(n)}] is not within the ${region.count} rows held (runs are [first row, rows], integers)`);
    }
  }
  const segments: Segment[] = runs.filter(([, n]) => n > 0).map(([first, n]) => ({ k: region.headK(h, first), v: region.headV(h, first), n, ld: d }));
  device.sparseAttention(at(q.buf, q.offset + h * g * d), g, d, scale, segments, at(out.buf, out.offset + h * g * d));
  return segments.reduce((n, s) => n + s.n, 0);
}
