import { toFloat32 } from '../../../shadowkv/src/dtype.js';
import type { Tensor } from '../../../shadowkv/src/tensor.js';
import { checkLinear, checkWeight, type Matmul, type MatmulWeight } from './Matmul.js';

interface JsWeight extends MatmulWeight {
  data: Float32Array; // [rows, cols]
}

// Weight rows per block: a block of W (~128 KB) stays in L2 while every row of x passes over it.
const BLOCK_BYTES = 128 * 1024;

/**
 * The reference `Matmul` in plain JS f32: weights widened to f32 once, W blocked so that each block
 * is read from memory once per call, four rows of x per pass over a W row. Works everywhere; the wasm
 * SIMD one is several times faster.
 */
export class JsMatmul implements Matmul {
  readonly name = 'js-f32';
  private readonly weights = new WeakSet<MatmulWeight>();

  prepare(weight: Tensor): JsWeight {
    const [rows, cols] = checkWeight('JsMatmul', weight);
    const w = { rows, cols, data: toFloat32(weight) };
    this.weights.add(w);
    return w;
  }

  linear(x: Float32Array, M: number, weight: MatmulWeight, out: Float32Array): void {
    checkLinear('JsMatmul', this.weights, x, M, weight, out);
    const { rows: N, cols: K, data: W } = weight as JsWeight;
    const block = Math.max(1, Math.floor(BLOCK_BYTES / (4 * K)));
    for (let n0 = 0; n0 < N; n0 += block) {
      const n1 = Math.min(N, n0 + block);
      let m = 0;
      for (; m + 4 <= M; m += 4) {
        const x0 = m * K, x1 = x0 + K, x2 = x1 + K, x3 = x2 + K;
        for (let n = n0; n < n1; n++) {
          const w = n * K;
          let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
          for (let k = 0; k < K; k++) {
            const wk = W[w + k]!;
            s0 += x[x0 + k]! * wk;
            s1 += x[x1 + k]! * wk;
            s2 += x[x2 + k]! * wk;
            s3 += x[x3 + k]! * wk;
          }
          out[m * N + n] = s0;
          out[(m + 1) * N + n] = s1;
          out[(m + 2) * N + n] = s2;
          out[(m + 3) * N + n] = s3;
        }
      }
      for (; m < M; m++) {
        const xr = m * K;
        for (let n = n0; n < n1; n++) {
          const w = n * K;
          let s = 0;
          for (let k = 0; k < K; k++) s += x[xr + k]! * W[w + k]!;
          out[m * N + n] = s;
        }
      }
    }
  }

  dispose(): void {}

  [Symbol.dispose](): void {
    this.dispose();
  }
}
