import { expect, it } from 'vitest';
import { at } from '../../packages/shadowkv/src/backend.js';
import { scoreChunks } from '../oracle/index.js';
import { forEachEnv } from '../envs.js';
import { get, put, rounded, rows, zerosOn } from '../helpers/device.js';
import { randn, relError, rng } from '../helpers/data.js';

forEachEnv('scoreChunks', (env) => {
  it.each([
    [1, 64, 37],
    [4, 128, 517],
    [8, 32, 5],
    // bf16 landmarks of 64/128 dims take the CUDA tensor cores, 8 query heads a pass: 12 heads are
    // two passes; a landmark count past one shared-memory stage (128 rows) and a ragged last one.
    [12, 128, 1000],
    [2, 64, 4099],
  ])('g=%i d=%i n=%i: softmax per query head, max over the group', (g, d, n) => {
    const device = env.instance.createDevice();
    const rand = rng(g * n);
    const q = Float64Array.from(randn(g * d, rand), Math.fround);
    const lm = rounded(randn(n * d, rand), env.dtype);
    const scores = zerosOn(device, n, 'f32');
    const scale = 1 / Math.sqrt(d);
    device.scoreChunks(at(put(device, q, 'f32')), g, d, scale, at(put(device, lm, env.dtype)), n, at(scores));
    const want = scoreChunks(rows(q, g, d), rows(lm, n, d), scale);
    expect(relError(get(device, scores), want)).toBeLessThan(1e-5);
  });

  it('queries too large for the split into bf16 parts (|q| 1e35) keep f32 semantics', () => {
    const device = env.instance.createDevice();
    const [g, d, n] = [4, 128, 300];
    const rand = rng(7);
    const q = Float64Array.from(randn(g * d, rand), (x) => Math.fround(x * 1e35));
    const lm = rounded(randn(n * d, rand, 1e-36), env.dtype);
    const scores = zerosOn(device, n, 'f32');
    const scale = 1 / Math.sqrt(d);
    device.scoreChunks(at(put(device, q, 'f32')), g, d, scale, at(put(device, lm, env.dtype)), n, at(scores));
    const want = scoreChunks(rows(q, g, d), rows(lm, n, d), scale);
    expect(relError(get(device, scores), want)).toBeLessThan(1e-4);
  });
});
