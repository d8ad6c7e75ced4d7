import { expect, it } from 'vitest';
import { at, HEAD_FIELDS, HEAD_WORDS, type Device } from '../../packages/shadowkv/src/backend.js';
import { forEachEnv } from '../envs.js';
import { put, rounded } from '../helpers/device.js';
import { randn, rng } from '../helpers/data.js';

// landmarkBounds (CUDA only: the bound its step's tensor-core logits read, logits_mma.cuh): each
// head's max |L_i| over its counted landmarks, from scratch, as f32 bits in the bound word after
// every head's counts; the counts themselves and the rows past a head's count play no part.
const f32Bits = (x: number) => new Int32Array(Float32Array.of(x).buffer)[0]!;

forEachEnv('landmarkBounds', (env) => {
  it.each([
    ['three heads, one empty, one full', 64, 40, [37, 0, 40], 1],
    ['magnitudes near the dtype\'s largest', 128, 9, [9, 4], env?.dtype === 'f16' ? 3e4 : 1e36],
    ['one landmark a head', 16, 1, [1, 1], 1e-3],
  ] as const)('%s: max |L| of each head\'s counted rows as f32 bits, the counts unchanged', (_name, d, capacity, counts, scale) => {
    const device: Device = env.instance.createDevice();
    const heads = counts.length;
    const rand = rng(d * 7 + capacity);
    // Rows past a head's count hold larger values, which must not count.
    const lm = Float64Array.from(randn(heads * capacity * d, rand, scale), (x, i) => (Math.floor(i / d) % capacity < counts[Math.floor(i / d / capacity)]! ? x : 4 * scale));
    const stored = rounded(lm, env.dtype);
    const table = new Int32Array(heads * HEAD_WORDS).fill(0x7f000000); // stale bounds: replaced, not raised
    counts.forEach((n, h) => table.set([n, 5, 6], h * HEAD_FIELDS));
    const lmBuf = put(device, lm, env.dtype);
    const tableBuf = put(device, table, 'i32');
    device.landmarkBounds!(at(lmBuf), heads, capacity, d, at(tableBuf));
    const got = device.read(at(tableBuf) as never, table.length) as Int32Array;
    const want = counts.map((n, h) => f32Bits(stored.subarray(h * capacity * d, (h * capacity + n) * d).reduce((m, x) => Math.max(m, Math.abs(x)), 0)));
    expect(Array.from(got.subarray(heads * HEAD_FIELDS))).toEqual(want);
    expect(Array.from(got.subarray(0, heads * HEAD_FIELDS))).toEqual(Array.from(table.subarray(0, heads * HEAD_FIELDS)));
    device.dispose();
  });

  it('a table too short for its bound words is a RangeError naming it, before any launch', () => {
    const device: Device = env.instance.createDevice();
    const lmBuf = put(device, new Float64Array(2 * 4 * 16), env.dtype);
    const tableBuf = put(device, new Int32Array(2 * HEAD_FIELDS), 'i32');
    expect(() => device.landmarkBounds!(at(lmBuf), 2, 4, 16, at(tableBuf))).toThrow(/landmarkBounds: headCounts needs elements \[0, 8\)/);
    device.dispose();
  });
}, (e) => e.name.startsWith('cuda-'));
