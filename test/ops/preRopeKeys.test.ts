import { expect, it } from 'vitest';
import { at, ropeFrequencies, type RopeStyle } from '../../packages/shadowkv/src/backend.js';
import { forEachEnv } from '../envs.js';
import { get, put, rounded, zerosOn } from '../helpers/device.js';
import { randn, rng } from '../helpers/data.js';

// preRopeKeys: every head's post-RoPE key rows to f32 columns of one matrix with RoPE undone at
// positions first + r, the bits of convertRows then rope (direction -1) a head at a time.
forEachEnv('preRopeKeys', (env) => {
  it.each([
    ['half', 3, 37, 16, 40, 0],
    ['interleaved', 2, 129, 64, 129, 70000],
    ['half', 8, 5, 128, 5, 1],
  ] as const)('%s RoPE, %i heads of %i rows, d=%i, head stride %i rows, from position %i: the ops one by one, bit for bit', (style, heads, rows, d, capacity, first) => {
    const device = env.instance.createDevice();
    const tail = put(device, rounded(randn(heads * capacity * d, rng(heads + rows + d)), env.dtype), env.dtype);
    const invFreq = device.alloc(d / 2, 'f64', 'test');
    device.write(at(invFreq), ropeFrequencies(d, { theta: 500000 }));
    const D = heads * d + 3; // a row stride past the heads: those columns are left alone
    const want = zerosOn(device, rows * D, 'f32');
    const positions = Int32Array.from({ length: rows }, (_, r) => first + r);
    for (let h = 0; h < heads; h++) {
      device.convertRows(at(want, h * d), D, at(tail, h * capacity * d), d, rows, d);
      device.rope(at(want, h * d), rows, d, D, positions, invFreq, style as RopeStyle, -1);
    }
    const got = put(device, new Float64Array(rows * D).fill(0), 'f32');
    device.preRopeKeys(at(got), D, at(tail), capacity * d, heads, rows, d, invFreq, style as RopeStyle, first);
    expect(Array.from(get(device, got))).toEqual(Array.from(get(device, want)));
  });

  it('odd d, a row stride short of the heads, negative or fractional counts and positions past int32 are RangeErrors, before any write', () => {
    const device = env.instance.createDevice();
    const tail = zerosOn(device, 2 * 8 * 16, env.dtype);
    const invFreq = zerosOn(device, 8, 'f64');
    const dst = put(device, new Float64Array(8 * 32).fill(5), 'f32');
    const call = (o: Partial<{ ld: number; stride: number; heads: number; rows: number; d: number; first: number }>) =>
      device.preRopeKeys(at(dst), o.ld ?? 32, at(tail), o.stride ?? 128, o.heads ?? 2, o.rows ?? 8, o.d ?? 16, invFreq, 'half', o.first ?? 0);
    expect(() => call({ d: 15 })).toThrow(/d must be even/);
    expect(() => call({ ld: 31 })).toThrow(/ld 31 is less than heads x d = 32/);
    expect(() => call({ heads: -1 })).toThrow(/must be non-negative integers/);
    expect(() => call({ rows: 2.5 })).toThrow(/must be non-negative integers/);
    expect(() => call({ first: 2 ** 31 - 4 })).toThrow(/pass int32/);
    expect(Array.from(get(device, dst)).every((x) => x === 5)).toBe(true);
  });
});
