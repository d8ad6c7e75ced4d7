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

// Finite queries and landmarks whose f32 logits overflow: scale q·L past FLT_MAX (q, L ~1e20) made
// every logit ±Infinity or NaN, and a NaN logit beside finite ones (two products of ±1e40 that
// cancel in float64) had scored its chunk 0. Such a head is scored in float64, as the oracle does.
forEachEnv('scoreChunks: logits past f32', (env) => {
  const run = (g: number, d: number, n: number, q: Float64Array, lm: Float64Array) => {
    const device = env.instance.createDevice();
    const scores = zerosOn(device, n, 'f32');
    const scale = 1 / Math.sqrt(d);
    device.scoreChunks(at(put(device, q, 'f32')), g, d, scale, at(put(device, lm, env.dtype)), n, at(scores));
    return { got: get(device, scores), want: scoreChunks(rows(q, g, d), rows(lm, n, d), scale) };
  };
  // d 64 and 128 of 16-bit landmarks take the CUDA tensor cores, d 16 the SIMT path; 600 landmarks
  // are two logit blocks there.
  const shapes: [number, number, number][] = [[1, 16, 37], [4, 128, 600], [2, 64, 300]];
  it.each(shapes)('g=%i d=%i n=%i, q and landmarks ~1e20: every logit past FLT_MAX', (g, d, n) => {
    const rand = rng(d + n);
    const q = Float64Array.from(randn(g * d, rand), (x) => Math.fround(x * 1e20));
    const { got, want } = run(g, d, n, q, rounded(randn(n * d, rand, 1e20), env.dtype));
    expect(relError(got, want)).toBeLessThan(1e-5);
  });
  it.each(shapes)('g=%i d=%i n=%i: a NaN logit among finite ones (products of ±1e40 that cancel)', (g, d, n) => {
    const rand = rng(3 * d + n);
    // Head 0 has q[0] = q[1] = 1e20, the other heads 0 there; chunk n - 1 (at n 37 past the wasm
    // runtime's 4-lane exp, in its scalar loop) has L[0] = -L[1] = 1e20, the other chunks 0 there.
    const q = Float64Array.from(randn(g * d, rand), (x, i) => (i % d < 2 ? (i < d ? 1e20 : 0) : Math.fround(x)));
    const c = n - 1;
    const lm = rounded(Float64Array.from(randn(n * d, rand), (x, i) => (i % d >= 2 ? x : i < c * d ? 0 : i === c * d ? 1e20 : -1e20)), env.dtype);
    const { got, want } = run(g, d, n, q, lm);
    expect(got[c], `chunk ${c}`).toBeCloseTo(want[c]!, 6);
    expect(relError(got, want)).toBeLessThan(1e-5);
  });
}, (e) => e.dtype !== 'f16'); // f16 landmarks cannot hold 1e20
