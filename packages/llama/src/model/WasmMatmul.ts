import { DTYPE_CODE } from '../../../shadowkv/src/backends/codes.js';
import { compileWasm, hasWasmSimd, instantiateWasm, type WasmVariant } from '../../../shadowkv/src/backends/wasm/loadWasm.js';
import type { WasmExports } from '../../../shadowkv/src/backends/wasm/abi.js';
import { DisposedError } from '../../../shadowkv/src/errors/DisposedError.js';
import { OutOfMemoryError } from '../../../shadowkv/src/errors/OutOfMemoryError.js';
import { DTYPE_BYTES } from '../../../shadowkv/src/dtype.js';
import type { DType, Tensor } from '../../../shadowkv/src/tensor.js';
import { checkLinear, checkWeight, type Matmul, type MatmulWeight } from './Matmul.js';

/** The runtime's exports this file calls: `skv_linear` (runtime/wasm/linear.cc) beside the allocator. */
type LinearExports = WasmExports & {
  skv_linear(x: number, M: number, K: number, W: number, wDtype: number, N: number, out: number): void;
};

export interface WasmWeight extends MatmulWeight {
  ptr: number;
  dtype: DType;
}

/**
 * `Matmul` on the wasm runtime: weights copied once, in their stored dtype (bf16 stays 2 bytes),
 * into a heap of their own; `skv_linear` multiplies with SIMD micro-kernels, widening to f32 as it reads.
 * @example
 * const matmul = await WasmMatmul.create();
 */
export class WasmMatmul implements Matmul {
  readonly name: string;
  readonly variant: WasmVariant;
  private readonly wasm: LinearExports;
  private readonly weights: number[] = [];
  private readonly prepared = new WeakSet<MatmulWeight>();
  private disposed = false;
  private io = { ptr: 0, floats: 0 }; // x and out, one block

  private constructor(wasm: LinearExports, variant: WasmVariant) {
    this.wasm = wasm;
    this.variant = variant;
    this.name = `wasm-${variant}`;
  }

  /** Compiles and instantiates the runtime (the SIMD build where the engine has wasm SIMD). */
  static async create(variant: WasmVariant = hasWasmSimd() ? 'simd' : 'plain'): Promise<WasmMatmul> {
    return new WasmMatmul(instantiateWasm(await compileWasm(variant)) as LinearExports, variant);
  }

  private alloc(bytes: number, what: string): number {
    const ptr = this.wasm.skv_malloc(bytes) >>> 0;
    if (!ptr) throw new OutOfMemoryError(`WasmMatmul: ${what} (${bytes} bytes) does not fit the 4 GB wasm heap`);
    return ptr;
  }

  prepare(weight: Tensor): WasmWeight {
    if (this.disposed) throw new DisposedError('WasmMatmul.prepare: the matmul was disposed');
    const [rows, cols] = checkWeight('WasmMatmul', weight);
    const bytes = weight.data.byteLength;
    const ptr = this.alloc(bytes, `a [${rows}, ${cols}] weight`);
    new Uint8Array(this.wasm.memory.buffer, ptr, bytes).set(new Uint8Array(weight.data.buffer, weight.data.byteOffset, bytes));
    this.weights.push(ptr);
    const w = { rows, cols, ptr, dtype: weight.dtype };
    this.prepared.add(w);
    return w;
  }

  linear(x: Float32Array, M: number, weight: MatmulWeight, out: Float32Array): void {
    if (this.disposed) throw new DisposedError('WasmMatmul.linear: the matmul was disposed');
    checkLinear('WasmMatmul', this.prepared, x, M, weight, out);
    this.linearRows(x, M, weight as WasmWeight, 0, weight.rows, out);
  }

  /**
   * Rows [r0, r1) of the weight only: `out[m, n - r0]` for n in [r0, r1), `[M, r1 - r0]` (each value
   * the bits `linear` gives it: skv_linear's sums run over k alike for any row range). Unchecked: the
   * callers (`linear`, ThreadedMatmul) have checked the call.
   */
  linearRows(x: Float32Array, M: number, weight: WasmWeight, r0: number, r1: number, out: Float32Array): void {
    const { cols: K, dtype } = weight;
    const N = r1 - r0;
    const ptr = weight.ptr + r0 * K * DTYPE_BYTES[dtype];
    const need = M * (K + N);
    if (need > this.io.floats) {
      if (this.io.ptr) this.wasm.skv_free(this.io.ptr);
      this.io = { ptr: 0, floats: 0 }; // freed before the next allocation, which may throw
      this.io = { ptr: this.alloc(4 * need, 'the activations'), floats: need };
    }
    const xPtr = this.io.ptr;
    const outPtr = xPtr + 4 * M * K;
    // NOTE: views are made after the allocations above: a heap growth detaches the old buffer.
    new Float32Array(this.wasm.memory.buffer, xPtr, M * K).set(x.subarray(0, M * K));
    this.wasm.skv_linear(xPtr, M, K, ptr, DTYPE_CODE[dtype], N, outPtr);
    out.set(new Float32Array(this.wasm.memory.buffer, outPtr, M * N));
  }

  dispose(): void {
    this.disposed = true;
    for (const p of this.weights.splice(0)) this.wasm.skv_free(p);
    if (this.io.ptr) this.wasm.skv_free(this.io.ptr);
    this.io = { ptr: 0, floats: 0 };
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
