import { expect, it } from 'vitest';
import { at, type Segment } from '../../packages/shadowkv/src/backend.js';
import { causalAttention, sparseAttention } from '../oracle/index.js';
import { forEachEnv } from '../envs.js';
import { get, put, rounded, rows, zerosOn } from '../helpers/device.js';
import { randn, relError, rng } from '../helpers/data.js';

forEachEnv('sparseAttention', (env) => {
  it.each([
    [1, 64, [17]],
    [4, 128, [384, 0, 2048, 33]],
    [3, 32, [1, 1, 1]],
  ])('g=%i d=%i segments %j: exact softmax over their union', (g, d, sizes) => {
    const device = env.instance.createDevice();
    const rand = rng(g + d);
    const q = Float64Array.from(randn(g * d, rand), Math.fround);
    const ld = d + 8;
    const keys: Float64Array[] = [];
    const values: Float64Array[] = [];
    const segments: Segment[] = sizes.map((n) => {
      const k = rounded(randn(n * ld, rand), env.dtype);
      const v = rounded(randn(n * ld, rand), env.dtype);
      keys.push(...rows(k, n, d, ld));
      values.push(...rows(v, n, d, ld));
      return { k: at(put(device, k, env.dtype)), v: at(put(device, v, env.dtype)), n, ld };
    });
    const out = zerosOn(device, g * d, 'f32');
    device.sparseAttention(at(put(device, q, 'f32')), g, d, 1 / Math.sqrt(d), segments, at(out));
    const want = rows(q, g, d).flatMap((qj) => [...sparseAttention(qj, keys, values, 1 / Math.sqrt(d))]);
    expect(relError(get(device, out), want)).toBeLessThan(1e-5);
  });

  // A runtime may split a task's keys by how many tasks its step has (CUDA: one wave of blocks on the
  // card), so every count must give the same softmax; counts that are not positive integers are refused.
  it('any step task count gives the exact softmax; tasks must be a positive integer', () => {
    const device = env.instance.createDevice();
    const rand = rng(77);
    const g = 4, d = 64, n = 9000; // 71 blocks of 128 keys: every count below splits them differently on CUDA
    const q = Float64Array.from(randn(g * d, rand), Math.fround);
    const k = rounded(randn(n * d, rand), env.dtype);
    const v = rounded(randn(n * d, rand), env.dtype);
    const segments: Segment[] = [{ k: at(put(device, k, env.dtype)), v: at(put(device, v, env.dtype)), n, ld: d }];
    const qv = at(put(device, q, 'f32'));
    const want = rows(q, g, d).flatMap((qj) => [...sparseAttention(qj, rows(k, n, d), rows(v, n, d), 1 / Math.sqrt(d))]);
    for (const tasks of [1, 5, 64, 3000, 100_000]) {
      const out = zerosOn(device, g * d, 'f32');
      device.sparseAttention(qv, g, d, 1 / Math.sqrt(d), segments, at(out), tasks);
      expect(relError(get(device, out), want), `tasks ${tasks}`).toBeLessThan(1e-5);
    }
    const out = zerosOn(device, g * d, 'f32');
    for (const bad of [0, -1, 2.5, Number.NaN]) expect(() => device.sparseAttention(qv, g, d, 1, segments, at(out), bad), `tasks ${bad}`).toThrow(/tasks must be a positive integer/);
  });

  it('large logits do not overflow (online softmax subtracts the running max)', () => {
    const device = env.instance.createDevice();
    const d = 16;
    const q = new Float64Array(d).fill(30);
    const k = rounded(Array.from({ length: 5 * d }, (_, i) => (Math.floor(i / d) === 3 ? 30 : -30)), env.dtype);
    const v = rounded(Array.from({ length: 5 * d }, (_, i) => Math.floor(i / d)), env.dtype);
    const out = zerosOn(device, d, 'f32');
    device.sparseAttention(at(put(device, q, 'f32')), 1, d, 1, [{ k: at(put(device, k, env.dtype)), v: at(put(device, v, env.dtype)), n: 5, ld: d }], at(out));
    expect(Array.from(get(device, out)).every((x) => Math.abs(x - 3) < 1e-6)).toBe(true);
  });

  it.each([
    [1, 64, 13, 0],
    [4, 32, 9, 30],
  ])('causal: g=%i d=%i, %i queries after %i earlier tokens', (g, d, Sq, offset) => {
    const device = env.instance.createDevice();
    const rand = rng(Sq + offset);
    const Sk = offset + Sq;
    const q = Float64Array.from(randn(g * Sq * d, rand), Math.fround);
    const k = rounded(randn(Sk * d, rand), env.dtype);
    const v = rounded(randn(Sk * d, rand), env.dtype);
    const out = zerosOn(device, g * Sq * d, 'f32');
    device.causalAttention(at(put(device, q, 'f32')), g, Sq, d, 0.125, offset, at(put(device, k, env.dtype)), at(put(device, v, env.dtype)), at(out));
    const want = Array.from({ length: g }, (_, j) => causalAttention(rows(q, Sq, d, d, j * Sq * d), rows(k, Sk, d), rows(v, Sk, d), 0.125, offset)).flat(2);
    expect(relError(get(device, out), want.flatMap((r) => [...r]))).toBeLessThan(1e-5);
  });
});

// Finite queries and keys whose f32 logits overflow (q, k ~1e20: products of 1e40, each logit ±Infinity
// or NaN): every query vector is redone in float64, as the oracle computes. On CUDA such a tile's NaN
// logits once made the lanes of a warp disagree on its max, and the kernel hung (bench/NOTES.md v57).
forEachEnv('attention: logits past f32', (env) => {
  const big = (n: number, rand: () => number) => Float64Array.from(randn(n, rand), (x) => Math.fround(x * 1e20));
  it.each([
    [2, 16, 70, 0],
    [1, 64, 40, 33],
    [4, 128, 37, 0],
    // 2^30 multiply-adds: CUDA's bf16 prefill takes the tensor cores (FlashCausal) from here
    ...(env?.backend === 'cuda' ? [[1, 64, 4096, 0]] : []),
  ])('causal: g=%i d=%i, %i queries after %i earlier tokens, q and k ~1e20', (g, d, Sq, offset) => {
    const device = env.instance.createDevice();
    const rand = rng(7 * Sq + d);
    const Sk = offset + Sq;
    const q = big(g * Sq * d, rand);
    const k = rounded(big(Sk * d, rand), env.dtype);
    const v = rounded(randn(Sk * d, rand), env.dtype);
    const out = zerosOn(device, g * Sq * d, 'f32');
    const scale = 1 / Math.sqrt(d);
    device.causalAttention(at(put(device, q, 'f32')), g, Sq, d, scale, offset, at(put(device, k, env.dtype)), at(put(device, v, env.dtype)), at(out));
    const want = Array.from({ length: g }, (_, j) => causalAttention(rows(q, Sq, d, d, j * Sq * d), rows(k, Sk, d), rows(v, Sk, d), scale, offset)).flat(2);
    expect(relError(get(device, out), want.flatMap((r) => [...r]))).toBeLessThan(1e-5);
  });
  it.each([
    [2, 16, [40, 30]],
    [4, 128, [1, 100]],
  ])('g=%i d=%i segments %j, q and k ~1e20', (g, d, sizes) => {
    const device = env.instance.createDevice();
    const rand = rng(g * d);
    const q = big(g * d, rand);
    const keys: Float64Array[] = [];
    const values: Float64Array[] = [];
    const segments: Segment[] = sizes.map((n) => {
      const k = rounded(big(n * d, rand), env.dtype);
      const v = rounded(randn(n * d, rand), env.dtype);
      keys.push(...rows(k, n, d));
      values.push(...rows(v, n, d));
      return { k: at(put(device, k, env.dtype)), v: at(put(device, v, env.dtype)), n, ld: d };
    });
    const out = zerosOn(device, g * d, 'f32');
    device.sparseAttention(at(put(device, q, 'f32')), g, d, 1 / Math.sqrt(d), segments, at(out));
    const want = rows(q, g, d).flatMap((qj) => [...sparseAttention(qj, keys, values, 1 / Math.sqrt(d))]);
    expect(relError(get(device, out), want)).toBeLessThan(1e-5);
  });
}, (e) => e.dtype !== 'f16'); // f16 keys cannot hold 1e20
