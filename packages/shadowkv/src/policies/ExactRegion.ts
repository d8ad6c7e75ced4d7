import type { Device, DeviceBuffer, View } from '../backends/Device.js';
import { hostArray } from '../dtype.js';
import { ConfigError } from '../errors/ConfigError.js';
import type { DType } from '../tensor.js';
import type { TailHandles } from '../backends/LayerStep.js';
import { growCapacity } from './capacity.js';

/**
 * Exact post-RoPE keys and values on the device, head-major `[kvHeads][capacity][headDim]` so each
 * head's rows are contiguous for attention. Rows `[kept, count)` hold consecutive positions from
 * `start` (every head alike); rows `[0, kept)` are what an eviction kept, per head, at `positions`.
 * Grows by an eighth; `drop` removes the oldest tokens, `evict` keeps chosen rows per head, `fit`
 * returns capacity.
 */
export class ExactRegion implements TailHandles {
  k: DeviceBuffer; // [Hkv, cap, d]
  v: DeviceBuffer; // [Hkv, cap, d]
  capacity: number;
  count = 0;
  /** Position of row `kept`: the rows from there on hold consecutive positions. */
  start = 0;
  /** Rows kept by the last eviction (0: none evicted). */
  kept = 0;
  /** Positions of rows `[0, kept)`, `[heads][kept]`, ascending per head. */
  positions: Int32Array = new Int32Array(0);

  constructor(
    private readonly device: Device,
    readonly heads: number,
    readonly d: number,
    private readonly dtype: DType,
    private readonly tag: string,
    /** The most rows a head ever needs (the cache's maxTokens): growth stops there. */
    private readonly limit: number,
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
    this.resize(growCapacity(need, this.capacity, 256, this.limit));
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

  /** Position of row `row` of head h. */
  position(h: number, row: number): number {
    return row < this.kept ? this.positions[h * this.kept + row]! : this.start + row - this.kept;
  }

  /** Removes the oldest `tokens` rows of every head (a region without evictions). */
  drop(tokens: number): void {
    const rest = (this.count - tokens) * this.d;
    for (let h = 0; h < this.heads; h++) {
      this.device.copy(this.headK(h), this.headK(h, tokens), rest);
      this.device.copy(this.headV(h), this.headV(h, tokens), rest);
    }
    this.shifted(tokens);
  }

  /** Accounts for `tokens` oldest rows moved out by a step that shifted the rows itself (compaction). */
  shifted(tokens: number): void {
    this.count -= tokens;
    this.start += tokens;
  }

  /**
   * Keeps rows `keep[h]` of each head h (ascending, the same number for every head) and drops the
   * others; the kept rows move to the front in order. Runs of consecutive rows move in one copy.
   * `capacity` (at least the rows kept) is what the region is then resized to, so that evicted
   * memory is returned at once; leave it out to keep the buffers.
   */
  evict(keep: readonly Int32Array[], capacity?: number): void {
    this.checkKeep(keep, capacity);
    const n = keep[0]!.length;
    const positions = new Int32Array(this.heads * n);
    keep.forEach((rows, h) => {
      rows.forEach((r, i) => (positions[h * n + i] = this.position(h, r)));
      for (let i = 0; i < n; ) {
        let j = i + 1;
        while (j < n && rows[j] === rows[j - 1]! + 1) j++;
        // NOTE: rows only move down (rows[i] >= i) and runs go in order, so no run overwrites a later source.
        if (rows[i] !== i) {
          this.device.copy(this.headK(h, i), this.headK(h, rows[i]!), (j - i) * this.d);
          this.device.copy(this.headV(h, i), this.headV(h, rows[i]!), (j - i) * this.d);
        }
        i = j;
      }
    });
    this.start = this.count === 0 ? this.start : this.position(0, this.count - 1) + 1;
    this.kept = n;
    this.count = n;
    this.positions = positions;
    if (capacity !== undefined) this.fit(capacity);
  }

  /**
   * A policy's eviction list, refused before any row moves: one Int32Array a head, the same number
   * of rows each (at least one), strictly ascending, every row held. NOTE: the copies rely on it:
   * an unsorted list would overwrite a source row before moving it.
   */
  private checkKeep(keep: readonly Int32Array[], capacity: number | undefined): void {
    const fail = (what: string) => {
      throw new ConfigError(`evict(): ${what}`);
    };
    if (!Array.isArray(keep) || keep.length !== this.heads) fail(`keep must hold one Int32Array of rows per kv head (${this.heads})`);
    const n = keep[0] instanceof Int32Array ? keep[0].length : 0;
    keep.forEach((rows, h) => {
      if (!(rows instanceof Int32Array) || rows.length !== n || n === 0) fail(`keep[${h}] must be an Int32Array of as many rows as keep[0] (${n}), at least one`);
      rows.forEach((r, i) => {
        if (r < 0 || r >= this.count || (i > 0 && r <= rows[i - 1]!)) fail(`keep[${h}][${i}] is ${r}: rows are strictly ascending and among the ${this.count} held`);
      });
    });
    if (capacity !== undefined && !(Number.isSafeInteger(capacity) && capacity >= n)) fail(`capacity must be an integer of at least the ${n} rows kept, got ${capacity}`);
  }

  /** Empties the region (buffers kept for reuse). */
  clear(): void {
    this.count = 0;
    this.start = 0;
    this.kept = 0;
    this.positions = new Int32Array(0);
  }

  /** Drops the newest rows down to position `length` (exclusive); only rows after `kept` can go. */
  cropTo(length: number): void {
    this.count = this.kept + length - this.start;
  }

  /** Resizes to `rows` of capacity (at least the count, at most the limit): after a compression, the most decode will need. */
  fit(rows: number): void {
    // NOTE: a window past maxTokens (localTokens + maxRecentTokens of 2^20 at maxTokens 200) needs no more than maxTokens rows.
    const want = Math.max(Math.min(rows, this.limit), this.count);
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

  /** Refills from a snapshot taken by `snapshot()`; `start` and `positions` as the region had them. */
  restore(count: number, k: Float32Array | Uint16Array, v: Float32Array | Uint16Array, start = 0, positions: Int32Array = new Int32Array(0)): void {
    this.clear();
    this.reserve(count);
    this.start = start;
    this.kept = positions.length / this.heads;
    this.positions = positions;
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
