import type { Backend } from '../../../shadowkv/src/backends/Backend.js';
import { at, type Device, type DeviceBuffer, type View } from '../../../shadowkv/src/backends/Device.js';
import { resolveBackend } from '../../../shadowkv/src/backends/registry.js';
import '../../../shadowkv/src/backends/index.js'; // registers cuda and wasm
import { DisposedError } from '../../../shadowkv/src/errors/DisposedError.js';
import type { Tensor } from '../../../shadowkv/src/tensor.js';
import { checkLinear, checkWeight, type Matmul, type MatmulWeight } from './Matmul.js';

interface DeviceWeight extends MatmulWeight {
  readonly buf: DeviceBuffer; // [rows, cols], the stored dtype
}

/**
 * `Matmul` through a shadowkv `Device`'s `gemm`: on the cuda backend the projections run on the GPU.
 * Weights are uploaded once, in their stored dtype (gemm reads f16 and bf16 operands and widens
 * them to f32 on both backends); each `linear` writes x into a reused device buffer, runs
 * `gemm(x, Wᵀ)` in f32 and reads the product back into `out`. On wasm, `WasmMatmul` is faster
 * (its decode path reads W in place; gemm packs it per call).
 * @example
 * using matmul = await DeviceMatmul.create('cuda'); // yours: model.dispose() leaves it
 * const model = await LlamaModel.create(checkpoint, { matmul });
 */
export class DeviceMatmul implements Matmul {
  readonly name: string;
  private readonly weights = new Set<DeviceWeight>();
  private x: DeviceBuffer | undefined; // [rows, K] f32, grown as needed
  private out: DeviceBuffer | undefined; // [rows, N] f32
  private disposed = false;

  /**
   * @param device where weights live and products run
   * @param ownsDevice `dispose` disposes the device too (what `create` sets); otherwise only this matmul's buffers are freed
   */
  constructor(readonly device: Device, private readonly ownsDevice = false) {
    this.name = `device-${device.backend}`;
  }

  /** A matmul on a device of its own, from a backend name (`'cuda'`, `'wasm'`, default `'auto'`) or a started backend. */
  static async create(backend: string | Backend = 'auto'): Promise<DeviceMatmul> {
    const b = typeof backend === 'string' ? (await resolveBackend(backend)).backend : backend;
    return new DeviceMatmul(b.createDevice(), true);
  }

  private live(what: string): Device {
    if (this.disposed) throw new DisposedError(`DeviceMatmul.${what}: the matmul was disposed`);
    return this.device;
  }

  prepare(weight: Tensor): DeviceWeight {
    const device = this.live('prepare');
    const [rows, cols] = checkWeight('DeviceMatmul', weight);
    const buf = device.alloc(rows * cols, weight.dtype, 'matmul.weights');
    try {
      device.write(at(buf), weight.data);
    } catch (err) {
      device.free(buf);
      throw err;
    }
    const w = { rows, cols, buf };
    this.weights.add(w);
    return w;
  }

  /** The activation buffer `name`, grown to `length` floats (the old one freed first, and forgotten before an allocation that may throw). */
  private io(name: 'x' | 'out', length: number): DeviceBuffer {
    const cur = this[name];
    if (cur && cur.length >= length) return cur;
    if (cur) this.device.free(cur);
    this[name] = undefined;
    return (this[name] = this.device.alloc(length, 'f32', `matmul.${name}`));
  }

  linear(x: Float32Array, M: number, weight: MatmulWeight, out: Float32Array): void {
    const device = this.live('linear');
    checkLinear('DeviceMatmul', this.weights, x, M, weight, out);
    const { rows: N, cols: K, buf: W } = weight as DeviceWeight;
    const xb = this.io('x', M * K);
    const ob = this.io('out', M * N);
    device.write(at(xb), x.subarray(0, M * K));
    device.gemm({ M, N, K, a: at(xb), lda: K, b: at(W), ldb: K, transB: true, c: at(ob), ldc: N });
    device.read(at(ob) as View & { buf: { dtype: 'f32' } }, M * N, out.subarray(0, M * N));
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const w of this.weights) this.device.free(w.buf);
    this.weights.clear();
    if (this.x) this.device.free(this.x);
    if (this.out) this.device.free(this.out);
    this.x = this.out = undefined;
    if (this.ownsDevice) this.device.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
