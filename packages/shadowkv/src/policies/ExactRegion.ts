import type { Device, DeviceBuffer, View } from '../backends/Device.js';
import { hostArray } from '../dtype.js';
import type { DType } from '../tensor.js';
import type { TailHandles } from '../backends/LayerStep.js';
import { growCapacity } from './capacity.js';

/**
 * Exact post-RoPE keys and values of consecutive tokens on the device, head-major
 * `[kvHeads][capacity][headDim]` so each head's rows are contiguous for attention.
 * Grows by an eighth; `drop` removes the oldest tokens, `fit` returns capacity a compressed prompt left.
 */
export class ExactRegion implements TailHandles {
  k: DeviceBuffer; // [Hkv, cap, d]
  v: DeviceBuffer; // [Hkv, cap, d]
  capacity: number;
  count = 0;

  constructor(
    private readonly device: Device,
    private readonly heads: number,
    private readonly d: number,
    private readonly dtype: DType,
    private readonly tag: string,
    capacity = 0,
  ) {
    this.capacity = capacity;
    this.k = device.alloc(heads * capacity * d, dtype, tag);
    this.v = device.alloc(heads * capacity * d, dtype, tag);
  }

  /** Key rows of head h. */
  headK(h: number, row = 0): View {
    return { buf: this.k, offset: (h * this.capacity + row) * this.d };
  }

  /** Value rows of head h. */
  headV(h: number, row = 0): View {
    return { buf: this.v, offset: (h * this.capacity + row) * this.d };
  }

  /** Makes room for `tokens` more rows. */
  reserve(tokens: number): void {
    const need = this.count + tokens;
    if (need <= this.capacity) return;
    this.resize(growCapacity(need, this.capacity, 256));
  }

  /** Moves the rows into buffers of `capacity` rows per head (both allocated before anything moves). */
  private resize(capacity: number): void {
    const { heads, d } = this;
    const k = this.device.alloc(heads * capacity * d, this.dtype, this.tag);
    let v: DeviceBuffer;
    try {
      v = this.device.alloc(heads * capacity * d, this.dtype, this.tag);
    } catch (err) {
      this.device.free(k);
      throw err;
    }
    for (const [grown, old] of [[k, this.k], [v, this.v]] as const) {
      for (let h = 0; h < heads; h++) this.device.copy({ buf: grown, offset: h * capacity * d }, { buf: old, offset: h * this.capacity * d }, this.count * d);
      this.device.free(old);
    }
    this.k = k;
    this.v = v;
    this.capacity = capacity;
  }

  /** Appends `tokens` rows to head h (converted to the storage dtype); call `commit` after the last head. */
  write(h: number, k: View, v: View, tokens: number): void {
    this.device.convert(this.headK(h, this.count), k, tokens * this.d);
    this.device.convert(this.headV(h, this.count), v, tokens * this.d);
  }

  commit(tokens: number): void {
    this.count += tokens;
  }

  /** Removes the oldest `tokens` rows of every head. */
  drop(tokens: number): void {
    const rest = (this.count - tokens) * this.d;
    for (let h = 0; h < this.heads; h++) {
      this.device.copy(this.headK(h), this.headK(h, tokens), rest);
      this.device.copy(this.headV(h), this.headV(h, tokens), rest);
    }
    this.count -= tokens;
  }

  /** Resizes to `rows` of capacity (at least the count): after a compression, the most decode will need. */
  fit(rows: number): void {
    const want = Math.max(rows, this.count);
    if (this.capacity !== want) this.resize(want);
  }

  /** Rows `[0, count)` of every head, `[Hkv][count][d]`, for snapshots. */
  snapshot(): { k: Float32Array | Uint16Array; v: Float32Array | Uint16Array } {
    const read = (buf: DeviceBuffer) => {
      const parts = Array.from({ length: this.heads }, (_, h) => this.device.read({ buf, offset: h * this.capacity * this.d } as never, this.count * this.d) as Float32Array | Uint16Array);
      const out = hostArray(this.dtype, this.heads * this.count * this.d);
      parts.forEach((p, h) => out.set(p as never, h * this.count * this.d));
      return out;
    };
    return { k: read(this.k), v: read(this.v) };
  }

  /** Refills from a snapshot taken by `snapshot()`. */
  restore(count: number, k: Float32Array | Uint16Array, v: Float32Array | Uint16Array): void {
    this.count = 0;
    this.reserve(count);
    const n = count * this.d;
    for (let h = 0; h < this.heads; h++) {
      this.device.write(this.headK(h), k.subarray(h * n, (h + 1) * n));
      this.device.write(this.headV(h), v.subarray(h * n, (h + 1) * n));
    }
    this.count = count;
  }

  free(): void {
    this.device.free(this.k);
    this.device.free(this.v);
  }
}
