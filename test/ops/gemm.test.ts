import { expect, it } from 'vitest';
import { at } from '../../packages/shadowkv/src/backend.js';
import { forEachEnv, type TestEnv } from '../envs.js';
import { get, put, rounded } from '../helpers/device.js';
import { randn, relError, rng } from '../helpers/data.js';

/** float64 reference of op(A)·op(B) with row gathers. */
function reference(M: number, N: number, K: number, a: Float64Array, lda: number, transA: boolean, rowsOf: number[] | undefined, b: Float64Array, ldb: number, transB: boolean) {
  const c = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) {
        const av = transA ? a[k * lda + i]! : a[(rowsOf ? rowsOf[i]! : i) * lda + k]!;
        const bv = transB ? b[j * ldb + k]! : b[k * ldb + j]!;
        s += av * bv;
      }
      c[i * N + j] = s;
    }
  }
  return c;
}

/**
 * A product of M rows whose CUDA grid has more row tiles than a grid's y holds (65535): operands
 * are small multiples of 1/8 (exact in every dtype, so the products and their sums are exact in
 * f32); rows are checked against float64 at both ends and around the 65535th tile of 64 and 128 rows.
 */
function pastTheGrid(env: TestEnv, M: number, N: number, K: number, transA: boolean, gather: boolean) {
  const device = env.instance.createDevice();
  const aRows = transA ? K : M + 5;
  const aCols = transA ? M : K;
  const a = Float32Array.from({ length: aRows * aCols }, (_, i) => (((i * 7919) % 17) - 8) / 8);
  const b = Float64Array.from({ length: K * N }, (_, i) => (((i * 31) % 13) - 6) / 8);
  const gathered = gather ? Int32Array.from({ length: M }, (_, i) => (i * 7 + 3) % aRows) : undefined;
  const C = device.alloc(M * N, 'f32', 'test');
  device.gemm({ M, N, K, a: at(put(device, a, env.dtype)), lda: aCols, transA, aRows: gathered && at(put(device, gathered, 'i32')), b: at(put(device, b, env.dtype)), ldb: N, c: at(C), ldc: N });
  const checked = [...new Set([0, 1, 2, 65535 * 64 - 1, 65535 * 64, 65535 * 128 - 1, 65535 * 128, M - 130, M - 2, M - 1].filter((i) => i >= 0 && i < M))];
  for (const i of checked) {
    const want = Float64Array.from({ length: N }, (_, j) => {
      let s = 0;
      for (let k = 0; k < K; k++) s += (transA ? a[k * aCols + i]! : a[(gathered ? gathered[i]! : i) * aCols + k]!) * b[k * N + j]!;
      return s;
    });
    expect(get(device, C, N, i * N), `row ${i}`).toEqual(want);
  }
}

forEachEnv('gemm', (env) => {
  // Odd sizes on purpose: tails of every tile dimension.
  it.each([
    [17, 23, 19, false, false, false],
    [33, 9, 64, true, false, false],
    [8, 31, 160, false, true, false],
    [24, 128, 160, false, false, true],
  ])('M=%i N=%i K=%i transA=%s transB=%s gather=%s matches float64', (M, N, K, transA, transB, gather) => {
    const device = env.instance.createDevice();
    const rand = rng(M * 1000 + N);
    const aRows = transA ? K : gather ? M * 3 : M;
    const aCols = transA ? M + 2 : K + 3; // lda > width
    const a = rounded(randn(aRows * aCols, rand), env.dtype);
    const ldb = transB ? K + 1 : N + 1;
    const b = rounded(randn((transB ? N : K) * ldb, rand), env.dtype);
    const gathered = gather ? Array.from({ length: M }, (_, i) => (i * 7) % aRows) : undefined;
    const A = put(device, a, env.dtype);
    const B = put(device, b, env.dtype);
    const C = put(device, new Float64Array(M * N), 'f32');
    const rows = gathered ? put(device, gathered, 'i32') : undefined;
    device.gemm({ M, N, K, a: at(A), lda: aCols, transA, aRows: rows && at(rows), b: at(B), ldb, transB, c: at(C), ldc: N });
    const want = reference(M, N, K, a, aCols, transA, gathered, b, ldb, transB);
    expect(relError(get(device, C), want)).toBeLessThan(1e-5);
  });

  it('alpha and beta scale and accumulate', () => {
    const device = env.instance.createDevice();
    const rand = rng(7);
    const a = rounded(randn(5 * 6, rand), env.dtype);
    const b = rounded(randn(6 * 4, rand), env.dtype);
    const c0 = Float64Array.from(randn(5 * 4, rand), Math.fround);
    const C = put(device, c0, 'f32');
    device.gemm({ M: 5, N: 4, K: 6, alpha: 0.5, a: at(put(device, a, env.dtype)), lda: 6, b: at(put(device, b, env.dtype)), ldb: 4, beta: 2, c: at(C), ldc: 4 });
    const want = reference(5, 4, 6, a, 6, false, undefined, b, 4, false).map((x, i) => 0.5 * x + 2 * c0[i]!);
    expect(relError(get(device, C), want)).toBeLessThan(1e-5);
  });

  // The f32 SIMT kernel's 64-row tiles (and every dtype's products on wasm).
  it.each([
    [65535 * 64 + 130, 3, 4, false, true],
    [65535 * 64 + 130, 3, 4, true, false],
  ])('M=%i N=%i K=%i transA=%s gather=%s: more row tiles than a grid holds', (M, N, K, transA, gather) => {
    pastTheGrid(env, M, N, K, transA, gather);
  });
});

// The tensor-core kernel's 128-row tiles: f32 operands and 2^30 or more multiply-adds.
forEachEnv('gemm on the tensor cores', (env) => {
  it.each([
    [65535 * 128 + 130, 16, 8, false, false],
    [65535 * 128 + 130, 16, 8, false, true],
  ])('M=%i N=%i K=%i transA=%s gather=%s: more row tiles than a grid holds', (M, N, K, transA, gather) => {
    pastTheGrid(env, M, N, K, transA, gather);
  });
}, (e) => e.name === 'cuda-f32');
