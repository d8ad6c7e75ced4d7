import { BUFFER_BYTES, type Device, type View } from './backends/Device.js';
import { dataMatches, detachedNote, elements, hostKind, ownView } from './dtype.js';
import { DeviceMismatchError } from './errors/DeviceMismatchError.js';
import { DisposedError } from './errors/DisposedError.js';
import { DTypeError } from './errors/DTypeError.js';
import { ShapeError } from './errors/ShapeError.js';
import { numel, type DType, type TensorData } from './tensor.js';

/**
 * Who frees a device tensor's memory:
 * - `'caller'`: you, with `dispose()` (or the cache that made it, at its `dispose()`)
 * - `'cache'`: an output the cache reuses (a `decode` result, in that layer's output buffer: valid until
 *   a later decode of that layer returns the cache's output again, i.e. has a device query and no `out`)
 * - `'external'`: the host loop that owns the memory (`wrapTensor`); the SDK never frees it
 */
export type TensorOwner = 'caller' | 'cache' | 'external';

/**
 * A dense row-major tensor in a backend's memory (CUDA: GPU memory; wasm: the cache's heap).
 * Cache calls take one wherever they take a host `Tensor` and read or write it in place, so a
 * host loop that keeps its activations on the GPU never copies them through JS arrays.
 * Make one with `cache.allocTensor(shape, dtype)`, wrap the host loop's own memory with
 * `cache.wrapTensor(address, shape, dtype)` (CUDA), or get one from `decode` when its inputs are
 * device tensors. It stays valid until `dispose()` or the `dispose()` of the cache it came from.
 * @example
 * // bf16 bits from the host (a Uint16Array each), or let kernels of yours write at `.address`
 * const query = cache.allocTensor([1, 32, 1, 128], 'bf16', queryBits);
 * const key = cache.allocTensor([1, 8, 1, 128], 'bf16', keyBits);
 * const value = cache.allocTensor([1, 8, 1, 128], 'bf16', valueBits);
 * const out = cache.decode(0, { query, key, value }); // a DeviceTensor: the cache's, until layer 0's next such decode
 * const host = out.read();                            // Uint16Array, waits for the GPU
 */
export class DeviceTensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** The backend whose memory this is (`'cuda'`, `'wasm'`, ...). */
  readonly backend: string;
  readonly owner: TensorOwner;
  #device: Device;
  #view: View | undefined;
  #release: (() => void) | undefined;

  /** @internal Made by a cache: `view` holds `numel(shape)` elements of `dtype`. */
  constructor(device: Device, view: View, shape: readonly number[], dtype: DType, owner: TensorOwner, release?: () => void) {
    this.#device = device;
    this.#view = view;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.backend = device.backend;
    this.owner = owner;
    this.#release = release;
  }

  /** Elements in the tensor. */
  get size(): number {
    return numel(this.shape);
  }

  /** Whether `dispose()` ran, or the cache it came from was disposed, or (a decode output) a later decode of its layer replaced it. */
  get disposed(): boolean {
    return this.#view === undefined;
  }

  /** Byte address of the first element: a CUDA device pointer; on wasm a byte offset in the cache's heap. */
  get address(): number {
    const v = this.live('address');
    return v.buf.ptr + v.offset * BUFFER_BYTES[v.buf.dtype];
  }

  /** Copies host data in (`Float32Array` for f32, `Uint16Array` bits for f16/bf16, `size` elements). */
  write(data: TensorData): this {
    const v = this.live('write()');
    this.checkHost('write()', 'the data', data);
    // NOTE: a plain view of the same memory: the copy reads buffer, byteOffset and byteLength, which a
    // subclass may redefine (a byteLength past the tensor's size would write past its memory).
    this.#device.write(v, ownView(data, this.dtype === 'f32' ? Float32Array : Uint16Array));
    return this;
  }

  /** Copies the tensor to the host: a new array, or `into` (of `size` elements) filled. On CUDA it waits for queued work. */
  read(into?: TensorData): TensorData {
    const v = this.live('read()');
    if (into !== undefined) this.checkHost('read()', 'into', into);
    return this.#device.read(v as View & { buf: { dtype: 'f32' } }, this.size, into as Float32Array | undefined) as TensorData;
  }

  /** Frees memory you own (`owner` `'caller'`); for other owners only this handle is retired. Idempotent. */
  dispose(): void {
    if (!this.#view) return;
    this.#view = undefined;
    const release = this.#release;
    this.#release = undefined;
    release?.();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** @internal Retires the handle without freeing (its cache is gone, or a later step reuses the memory). */
  invalidate(): void {
    this.#view = undefined;
    this.#release = undefined;
  }

  /**
   * @internal The tensor's memory as a view `device` can read: the same device, or one of the same
   * address space. Throws `DisposedError` or `DeviceMismatchError` naming `call` and `name`.
   */
  viewFor(device: Device, call: string, name: string): View {
    const v = this.#view;
    if (!v) throw new DisposedError(`${call}: ${name} is a device tensor that was disposed${this.owner === 'cache' ? ' (a decode output is replaced by the next decode of its layer; copy it, or pass your own out)' : ''}`);
    const same = this.#device === device || (device.addressSpace !== undefined && this.#device.addressSpace === device.addressSpace);
    if (!same) {
      const where = this.#device.backend === device.backend ? `another ${device.backend} device (${this.#device.addressSpace ?? "another cache's memory"})` : `the ${this.#device.backend} backend`;
      throw new DeviceMismatchError(`${call}: ${name} is a device tensor of ${where}; this cache runs on ${device.backend}${device.addressSpace ? ` (${device.addressSpace})` : ''}. Make it with this cache's allocTensor(), or pass a host Tensor`);
    }
    return v;
  }

  /** A host array of this tensor's dtype (`DTypeError` otherwise) and of its `size` elements (`ShapeError` otherwise). */
  private checkHost(call: string, name: string, data: unknown): asserts data is TensorData {
    // By the internal slots, not instanceof and `.length`: another realm's Float32Array is one, and a
    // subclass may redefine length (a long array that says it is short would be copied whole).
    if (!dataMatches(data, this.dtype)) {
      throw new DTypeError(`DeviceTensor.${call}: a '${this.dtype}' tensor takes a ${hostKind(this.dtype)}, ${name} is ${Object.prototype.toString.call(data)}`);
    }
    const n = elements(data as TensorData);
    if (n !== this.size) throw new ShapeError(`DeviceTensor.${call}: the tensor is [${this.shape.join(', ')}] (${this.size} elements), ${name} has ${n}${detachedNote(data as TensorData)}`);
  }

  private live(what: string): View {
    if (!this.#view) throw new DisposedError(`DeviceTensor.${what}: the tensor was disposed`);
    return this.#view;
  }
}
