import { dataMatches, knownDtype } from '../../../shadowkv/src/dtype.js';
import { ConfigError } from '../../../shadowkv/src/errors/ConfigError.js';
import { DTypeError } from '../../../shadowkv/src/errors/DTypeError.js';
import { DeviceMismatchError } from '../../../shadowkv/src/errors/DeviceMismatchError.js';
import { ShapeError } from '../../../shadowkv/src/errors/ShapeError.js';
import { fmt } from '../../../shadowkv/src/policies/validate.js';
import type { Tensor } from '../../../shadowkv/src/tensor.js';

/** A weight a `Matmul` has taken in (converted, or copied into a wasm heap or a device): `[rows (out), cols (in)]`. */
export interface MatmulWeight {
  readonly rows: number;
  readonly cols: number;
}

/**
 * The projections' matrix product, `out[m, n] = Σ_k x[m, k] · W[n, k]` (x f32 `[M, K]`, W `[N, K]` as
 * `nn.Linear` stores it). Weights are taken in once by `prepare`; the loop calls `linear` per layer.
 */
export interface Matmul extends Disposable {
  /** e.g. `'js-f32'`, `'wasm-simd'`, `'device-cuda'`. */
  readonly name: string;
  prepare(weight: Tensor): MatmulWeight;
  linear(x: Float32Array, rows: number, weight: MatmulWeight, out: Float32Array): void;
  /** Frees what `prepare` took (a wasm heap, device buffers); `WasmMatmul` and `DeviceMatmul` then throw `DisposedError`. */
  dispose(): void;
}

/**
 * Throws a DTypeError unless `weight` is f32, f16 or bf16 in its host array type (a matmul would read
 * another dtype's bytes as f32), and a ShapeError unless it is a 2-D `[rows, cols]` tensor whose data holds rows * cols elements.
 */
export function checkWeight(who: string, weight: Tensor): [rows: number, cols: number] {
  knownDtype(`${who}.prepare`, weight.dtype);
  if (!dataMatches(weight.data, weight.dtype)) throw new DTypeError(`${who}.prepare: a '${weight.dtype}' weight holds its elements in a ${weight.dtype === 'f32' ? 'Float32Array' : 'Uint16Array'}, got ${Object.prototype.toString.call(weight.data)}`);
  const [rows, cols] = weight.shape;
  const ok = weight.shape.length === 2 && Number.isInteger(rows) && Number.isInteger(cols) && rows! > 0 && cols! > 0;
  if (!ok) throw new ShapeError(`${who}.prepare: a weight must be [rows, cols] of positive sizes, got [${weight.shape.join(', ')}]`);
  if (weight.data.length !== rows! * cols!) throw new ShapeError(`${who}.prepare: a [${rows}, ${cols}] weight needs ${rows! * cols!} elements, got ${weight.data.length}`);
  return [rows!, cols!];
}

/**
 * Throws a DeviceMismatchError unless `prepared` (the matmul's own weights) holds `weight`, and a
 * ShapeError unless `x` holds `rows` rows of the weight's cols and `out` as many of its rows.
 */
export function checkLinear(who: string, prepared: { has(w: MatmulWeight): boolean }, x: Float32Array, rows: number, weight: MatmulWeight, out: Float32Array): void {
  if (!prepared.has(weight)) throw new DeviceMismatchError(`${who}.linear: the weight was not prepared by this matmul`);
  const { rows: N, cols: K } = weight;
  if (!Number.isInteger(rows) || rows < 1) throw new ShapeError(`${who}.linear: rows must be a positive integer, got ${rows}`);
  if (x.length < rows * K) throw new ShapeError(`${who}.linear: x holds ${x.length} floats, ${rows} rows of ${K} need ${rows * K}`);
  if (out.length < rows * N) throw new ShapeError(`${who}.linear: out holds ${out.length} floats, ${rows} rows of ${N} need ${rows * N}`);
}

/** Throws a ConfigError unless `threads` is an integer in [1, 256] (LlamaModel's option, ThreadedMatmul's count). */
export function checkThreads(who: string, threads: number): number {
  if (!(Number.isInteger(threads) && threads >= 1 && threads <= 256)) throw new ConfigError(`${who}: threads must be an integer in [1, 256], got ${fmt(threads)}`);
  return threads;
}
