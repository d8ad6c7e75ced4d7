import { BUFFER_BYTES, type BufferDType, type Device, type DeviceBuffer } from '../../backends/Device.js';

/** Bytes of one reserved slab: few enough calls that pinning is paid per byte, not per page. */
const SLAB_BYTES = 2 ** 30;

/**
 * The host pages of a cache's stores (`length` elements each: values, or the 4-byte words of fp8 chunks). A page is its own host-tier
 * allocation, made when a store grows and freed with it, unless pages were reserved: `reserve` pins
 * them up front as a few large slabs carved into pages, which stores then take and give back. On
 * CUDA pinning costs ~0.35 ms per MB (bench/NOTES.md), ~100 ms per 128K-token row of a Llama-3-8B
 * layer, so a cache with a declared maxTokens pays it at creation and compress() only copies.
 * NOTE: a page is read only at chunks a store wrote, so a reserved page handed on keeps old bytes unseen.
 */
export class HostPages {
  private readonly slabs: DeviceBuffer[] = [];
  private readonly idle: DeviceBuffer[] = []; // reserved pages not in a store, the lowest address last
  private readonly carved = new Set<DeviceBuffer>();

  constructor(
    private readonly device: Device,
    readonly length: number,
    readonly dtype: BufferDType,
  ) {}

  /** Reserved pages not in a store. */
  get available(): number {
    return this.idle.length;
  }

  /** Pins `pages` more pages now, in slabs of at most SLAB_BYTES (at least one page each). */
  reserve(pages: number): void {
    const bytes = this.length * BUFFER_BYTES[this.dtype];
    const perSlab = Math.max(1, Math.floor(SLAB_BYTES / bytes));
    for (let left = pages; left > 0; left -= perSlab) {
      const n = Math.min(perSlab, left);
      const slab = this.device.alloc(n * this.length, this.dtype, 'values', 'host');
      this.slabs.push(slab);
      for (let i = n - 1; i >= 0; i--) {
        const page: DeviceBuffer = { ...slab, ptr: slab.ptr + i * bytes, length: this.length };
        this.carved.add(page);
        this.idle.push(page);
      }
    }
  }

  /** A page: a reserved one while any is left, else a new host-tier allocation. */
  take(): DeviceBuffer {
    return this.idle.pop() ?? this.device.alloc(this.length, this.dtype, 'values', 'host');
  }

  /** Gives a page back: to the reserve if it came from it, else to the device. */
  give(page: DeviceBuffer): void {
    if (this.carved.has(page)) this.idle.push(page);
    else this.device.free(page);
  }

  /** Frees the slabs (every store gave its pages back first). */
  dispose(): void {
    this.slabs.forEach((s) => this.device.free(s));
    this.slabs.length = this.idle.length = 0;
    this.carved.clear();
  }
}
