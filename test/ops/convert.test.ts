import { expect, it } from 'vitest';
import { at, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../packages/shadowkv/src/backend.js';
import { forEachEnv } from '../envs.js';
import { get, put } from '../helpers/device.js';

// Edge values: zero, signs, subnormal halves, overflow, rounding ties.
const VALUES = [0, -0, 1, -1, 1 / 3, 65504, 65520, 1e-5, 6e-8, 3e-8, 1e-40, 3.14159, -2.5e10, 1.00390625, 1.01171875];

forEachEnv('convert', (env) => {
  it('f32 -> storage dtype rounds to nearest even like the TS reference', () => {
    const device = env.instance.createDevice();
    const src = put(device, VALUES, 'f32');
    const dst = device.alloc(VALUES.length, env.dtype, 'test');
    device.convert(at(dst), at(src), VALUES.length);
    const widen = env.dtype === 'bf16' ? (x: number) => bf16ToF32(f32ToBf16(x)) : env.dtype === 'f16' ? (x: number) => f16ToF32(f32ToF16(x)) : (x: number) => Math.fround(x);
    expect(Array.from(get(device, dst))).toEqual(VALUES.map(widen));
  });

  it('converts rows between strided buffers', () => {
    const device = env.instance.createDevice();
    const src = put(device, Array.from({ length: 3 * 5 }, (_, i) => i), env.dtype); // [3 x 5]
    const dst = put(device, new Array(3 * 8).fill(-1), 'f32'); // [3 x 8]
    device.convertRows(at(dst, 2), 8, at(src, 1), 5, 3, 3);
    const out = get(device, dst);
    expect(Array.from(out.slice(0, 8))).toEqual([-1, -1, 1, 2, 3, -1, -1, -1]);
    expect(Array.from(out.slice(16, 24))).toEqual([-1, -1, 11, 12, 13, -1, -1, -1]);
  });
});
