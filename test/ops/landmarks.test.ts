import { expect, it } from 'vitest';
import { at } from '../../packages/shadowkv/src/backend.js';
import { chunkLandmarks } from '../oracle/index.js';
import { forEachEnv } from '../envs.js';
import { get, put, rounded, rows, zerosOn } from '../helpers/device.js';
import { randn, relError, rng } from '../helpers/data.js';

forEachEnv('landmarks', (env) => {
  it.each([
    [5, 8, 64, 64],
    [3, 4, 128, 3 * 128],
    [7, 1, 16, 16],
  ])('%i chunks of %i rows, d=%i, row stride %i: means and min-cosines match float64', (chunks, C, d, ld) => {
    const device = env.instance.createDevice();
    const n = chunks * C;
    const keys = rounded(randn(n * ld, rng(n + d)), env.dtype);
    const lm = zerosOn(device, chunks * d, 'f32');
    const minCos = zerosOn(device, chunks, 'f32');
    device.landmarks(at(put(device, keys, env.dtype)), ld, chunks, C, d, at(lm), at(minCos));
    const want = chunkLandmarks(rows(keys, n, d, ld), C);
    expect(relError(get(device, lm), want.landmarks.flatMap((l) => [...l]))).toBeLessThan(1e-5);
    expect(relError(get(device, minCos), want.minCos)).toBeLessThan(1e-5);
    if (C === 1) expect(Array.from(get(device, minCos)).every((c) => Math.abs(c - 1) < 1e-5)).toBe(true);
  });
});
