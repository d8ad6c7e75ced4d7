import { expect, it } from 'vitest';
import { at, type Device, type DeviceBuffer } from '../../packages/shadowkv/src/backend.js';
import { forEachEnv, type TestEnv } from '../envs.js';
import { get, put, rounded } from '../helpers/device.js';
import { randn, rng } from '../helpers/data.js';

// keepLandmarks: each head's chunks but its outliers, in order, become its landmarks j = 0, 1, ...
// (rows h * capacity + j of the store, in its dtype, and their chunk ids); ids past them are 0.
const d = 16;

/** Random f32 landmarks of `heads x chunks` rows, an output and ids full of garbage, on `env`'s device. */
function setup(env: TestEnv, heads: number, chunks: number, capacity: number) {
  const device: Device = env.instance.createDevice();
  const lm = randn(heads * chunks * d, rng(heads * 100 + chunks));
  const out = put(device, new Float64Array(heads * capacity * d).fill(7), env.dtype);
  const ids = put(device, new Int32Array(heads * capacity).fill(-9), 'i32');
  return { device, lm, lmBuf: put(device, lm, 'f32'), out, ids };
}

/** What head h's landmarks and ids should be. */
function want(lm: Float64Array, heads: number, chunks: number, capacity: number, outliers: number[][], dtype: TestEnv['dtype']) {
  const out = new Float64Array(heads * capacity * d).fill(7); // past a head's landmarks: untouched
  const ids = new Int32Array(heads * capacity);
  for (let h = 0; h < heads; h++) {
    let j = 0;
    for (let c = 0; c < chunks; c++) {
      if (outliers[h]!.includes(c)) continue;
      out.set(rounded(lm.subarray((h * chunks + c) * d, (h * chunks + c + 1) * d), dtype), (h * capacity + j) * d);
      ids[h * capacity + j++] = c;
    }
  }
  return { out, ids };
}

const lists = (outliers: number[][], max: number) => {
  const ids = new Int32Array(outliers.length * max).fill(-5); // past a head's count: never read
  outliers.forEach((o, h) => ids.set(o, h * max));
  return { ids, counts: Int32Array.from(outliers, (o) => o.length) };
};

forEachEnv('keepLandmarks', (env) => {
  it.each([
    ['no outliers', 2, 9, 12, [[], []]],
    ['the first, last and middle chunks', 3, 37, 40, [[0, 36], [5, 6, 7], [18]]],
    ['every chunk an outlier in one head', 2, 5, 5, [[0, 1, 2, 3, 4], [2]]],
    ['a capacity that the landmarks fill exactly', 1, 300, 297, [[1, 100, 299]]],
  ] as const)('%s: the kept rows in order, rounded to the dtype, with their ids and zeros after', (_name, heads, chunks, capacity, outliers) => {
    const o = outliers.map((x) => [...x]);
    const { device, lm, lmBuf, out, ids } = setup(env, heads, chunks, capacity);
    const { ids: oIds, counts } = lists(o, 6);
    device.keepLandmarks(at(lmBuf), heads, chunks, d, oIds, counts, 6, at(out), at(ids), capacity);
    const w = want(lm, heads, chunks, capacity, o, env.dtype);
    expect(Array.from(get(device, ids))).toEqual(Array.from(w.ids));
    expect(Array.from(get(device, out))).toEqual(Array.from(w.out));
  });
});

forEachEnv('keepLandmarks bad lists', (env) => {
  it('unsorted, repeated or out-of-range outliers, counts past their bounds and a small capacity are RangeErrors naming them, before any write', () => {
    const { device, lmBuf, out, ids } = setup(env, 2, 10, 10);
    const before = [Array.from(get(device, out)), Array.from(get(device, ids))];
    const bad: [number[][], number, number, RegExp][] = [
      [[[3, 2], []], 4, 10, /head 0's outlier 1 is chunk 2: the ids must ascend within \[0, 10\)/],
      [[[], [4, 4]], 4, 10, /head 1's outlier 1 is chunk 4/],
      [[[-1], []], 4, 10, /head 0's outlier 0 is chunk -1/],
      [[[1], [10]], 4, 10, /head 1's outlier 0 is chunk 10/],
      [[[1, 2, 3, 4, 5], []], 4, 10, /head 0 has 5 outliers \(at most 4\)/],
      [[[1], []], 4, 9, /head 1 keeps 10 landmarks, past the capacity of 9/],
    ];
    for (const [o, max, capacity, message] of bad) {
      const oIds = new Int32Array(2 * max + 8); // head h's list at h * max (a list longer than max runs into the next head's: refused first)
      o.forEach((x, h) => oIds.set(x, h * max));
      expect(() => device.keepLandmarks(at(lmBuf), 2, 10, d, oIds, Int32Array.from(o, (x) => x.length), max, at(out), at(ids), capacity)).toThrow(message);
    }
    expect(() => device.keepLandmarks(at(lmBuf), 2, 10, d, new Int32Array(3), Int32Array.of(0, 0), 2, at(out), at(ids), 10)).toThrow(/3 outlier ids for 2 heads of up to 2/);
    expect(() => device.keepLandmarks(at(lmBuf), 2.5, 10, d, new Int32Array(8), Int32Array.of(0, 0), 2, at(out), at(ids), 10)).toThrow(RangeError);
    expect([Array.from(get(device, out)), Array.from(get(device, ids))]).toEqual(before);
  });
});

/** The CUDA bounds: an output too small for `heads x capacity` rows is refused before the kernel. */
forEachEnv('keepLandmarks bounds', (env) => {
  it('an output or ids buffer too small is a RangeError', () => {
    const { device, lmBuf, out, ids } = setup(env, 2, 10, 10);
    const small: DeviceBuffer = put(device, new Int32Array(19), 'i32');
    const none = new Int32Array(4);
    expect(() => device.keepLandmarks(at(lmBuf), 2, 10, d, none, Int32Array.of(0, 0), 2, at(out, 1), at(ids), 10)).toThrow(RangeError);
    expect(() => device.keepLandmarks(at(lmBuf), 2, 10, d, none, Int32Array.of(0, 0), 2, at(out), at(small), 10)).toThrow(RangeError);
  });
}, (e) => e.name.startsWith('cuda'));
