import { expect, it } from 'vitest';
import { at, NonFiniteError } from '../../packages/shadowkv/src/backend.js';
import { fromRows, lowRankKeys as exactLowRank, matmul, type Matrix } from '../oracle/index.js';
import { forEachEnv } from '../envs.js';
import { get, put, zerosOn } from '../helpers/device.js';
import { lowRankKeys as structuredKeys, randn, relError, rng } from '../helpers/data.js';

/** Keys [S, D] (heads concatenated) from the structured generator. */
function keys(S: number, Hkv: number, d: number, rank: number, seed: number, noise: number): Matrix {
  const perHead = structuredKeys(Hkv, S, d, rank, rng(seed), noise);
  return fromRows(Array.from({ length: S }, (_, t) => Float64Array.from({ length: Hkv * d }, (_, c) => Math.fround(perHead[(Math.floor(c / d) * S + t) * d + (c % d)]!))));
}

function factor(env: Parameters<Parameters<typeof forEachEnv>[1]>[0], K: Matrix, rank: number) {
  const device = env.instance.createDevice();
  const { rows: S, cols: D } = K;
  const out = { u: zerosOn(device, S * rank, 'f32'), sv: zerosOn(device, rank * D, 'f32'), proj: zerosOn(device, D * rank, 'f32'), sigma: zerosOn(device, rank, 'f32') };
  device.lowRankKeys(at(put(device, K.data, 'f32')), S, D, rank, 16, 2, 1234, { u: at(out.u), sv: at(out.sv), proj: at(out.proj), sigma: at(out.sigma) });
  const m = (buf: typeof out.u, rows: number, cols: number): Matrix => ({ rows, cols, data: get(device, buf) });
  return { U: m(out.u, S, rank), SV: m(out.sv, rank, D), proj: m(out.proj, D, rank), sigma: get(device, out.sigma) };
}

forEachEnv('lowRankKeys', (env) => {
  it.each([
    [301, 2, 32, 6, 16, 0.02],
    [257, 4, 32, 24, 16, 0.05],
    [97, 2, 16, 40, 32, 0.0],
  ])('S=%i Hkv=%i d=%i true rank %i, kept %i, noise %f: reconstruction as good as the exact truncated SVD', (S, Hkv, d, trueRank, rank, noise) => {
    const K = keys(S, Hkv, d, trueRank, S + rank, noise);
    const exact = exactLowRank(K, rank);
    const got = factor(env, K, rank);
    const exactErr = relError(matmul(exact.U, exact.SV).data, K.data);
    const gotErr = relError(matmul(got.U, got.SV).data, K.data);
    // NOTE: past the true rank the spectrum is flat noise, where subspace iteration finds a
    // near-optimal, not the optimal, subspace: allow 1 % on the residual.
    expect(gotErr).toBeLessThanOrEqual(exactErr * 1.01 + 1e-6);
    // Singular values of the signal agree; they, unlike the factors, are unique.
    const signal = Math.min(trueRank, rank);
    expect(relError(got.sigma.slice(0, signal), exact.sigma.slice(0, signal))).toBeLessThan(1e-4);
    // proj maps keys back to U: K · proj ≈ U where sigma is not cut off.
    expect(relError(matmul(K, got.proj).data, got.U.data)).toBeLessThan(1e-3);
  });

  // l = rank + oversample past the width whose eigenvectors a block of the GPU holds in shared
  // memory (854 on an H200, 613 on an A100): the CUDA runtime forms them on the host instead.
  it('a subspace of 916 rows (wider than the device eigensolve holds): factors that rebuild the keys', () => {
    const K = keys(920, 8, 120, 24, 5, 0);
    const got = factor(env, K, 900);
    expect([...got.U.data, ...got.SV.data, ...got.proj.data].every(Number.isFinite)).toBe(true);
    expect(relError(matmul(got.U, got.SV).data, K.data)).toBeLessThan(1e-5);
  });

  it('rank-deficient keys give finite factors (1/sigma cut off)', () => {
    const K = keys(64, 2, 8, 3, 9, 0);
    const got = factor(env, K, 8);
    expect([...got.U.data, ...got.proj.data].every(Number.isFinite)).toBe(true);
    expect(relError(matmul(got.U, got.SV).data, K.data)).toBeLessThan(1e-5);
    void randn;
  });
}, (e) => e.dtype === 'f32');

// The CUDA runtime's factorization on its own thread and stream (compress() runs the landmarks
// meanwhile): the same bits as in line, with other ops issued before the join; one at a time; a
// non-finite key refused at the join as lowRankKeys refuses it.
forEachEnv('lowRankKeysAlongside', (env) => {
  it('gives lowRankKeys\' bits with ops issued meanwhile; refuses a second start or an in-line call before the join; a non-finite key throws at the join', () => {
    const device = env.instance.createDevice();
    const K = keys(301, 2, 32, 6, 7, 0.02);
    const [S, D, rank] = [K.rows, K.cols, 16];
    const outs = () => ({ u: zerosOn(device, S * rank, 'f32'), sv: zerosOn(device, rank * D, 'f32'), proj: zerosOn(device, D * rank, 'f32'), sigma: zerosOn(device, rank, 'f32') });
    const views = (o: ReturnType<typeof outs>) => ({ u: at(o.u), sv: at(o.sv), proj: at(o.proj), sigma: at(o.sigma) });
    const read = (o: ReturnType<typeof outs>) => [get(device, o.u), get(device, o.sv), get(device, o.proj), get(device, o.sigma)];
    const [inline, aside] = [outs(), outs()];
    device.lowRankKeys(at(put(device, K.data, 'f32')), S, D, rank, 16, 2, 1234, views(inline));
    const k = put(device, K.data, 'f32');
    const join = device.lowRankKeysAlongside!(at(k), S, D, rank, 16, 2, 1234, views(aside));
    expect(() => device.lowRankKeysAlongside!(at(k), S, D, rank, 16, 2, 1234, views(outs()))).toThrow(/already running aside/);
    expect(() => device.lowRankKeys(at(k), S, D, rank, 16, 2, 1234, views(outs()))).toThrow(/running aside/);
    const other = put(device, Array.from({ length: 4096 }, (_, i) => i), 'f32');
    device.convert(at(zerosOn(device, 4096, 'bf16')), at(other), 4096);
    join();
    expect(() => join()).toThrow(/no factorization is running aside/);
    read(aside).forEach((got, i) => expect(Array.from(got), `output ${i}`).toEqual(Array.from(read(inline)[i]!)));
    const bad = Float64Array.from(K.data);
    bad[S * D - 3] = NaN;
    const refuse = device.lowRankKeysAlongside!(at(put(device, bad, 'f32')), S, D, rank, 16, 2, 1234, views(outs()));
    const err = (() => {
      try {
        refuse();
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(NonFiniteError);
    expect((err as Error).message).toMatch(/keys to compress hold a NaN or infinite value/);
    device.dispose();
  });
}, (e) => e.name === 'cuda-f32');
