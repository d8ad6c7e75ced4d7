import { BUFFER_BYTES, type BufferDType, type Device, type DeviceBuffer, type DeviceMemory } from './Device.js';

/**
 * The bookkeeping every device does the same way: bytes held per tier and per component tag (what
 * `memory()` reports), and the named scratch buffers kept between calls (grown, never shrunk).
 */
export class MemoryLedger {
  private readonly tags = new Map<string, number>();
  private readonly tiers = { device: 0, host: 0 };
  /** Per dtype, then per name. NOTE: not keyed `name:dtype`: a key made per call is a new string to hash (~130 ns) every step. */
  private readonly scratchBuffers = new Map<BufferDType, Map<string, DeviceBuffer>>();

  /** Counts a buffer in (`sign` 1, at allocation) or out (-1, at free). */
  count(buf: DeviceBuffer, sign: 1 | -1): void {
    const bytes = sign * Math.max(buf.length, 1) * BUFFER_BYTES[buf.dtype];
    const tag = buf.tier === 'host' ? `host:${buf.tag}` : buf.tag;
    this.tags.set(tag, (this.tags.get(tag) ?? 0) + bytes);
    this.tiers[buf.tier] += bytes;
  }

  /**
   * The scratch buffer `name` of `dtype` with room for `length` elements: reallocated (at least
   * doubled) through `device` when smaller. NOTE: one buffer per name and dtype, so that calls
   * alternating dtypes do not double it each time; the new buffer is made before the old is freed,
   * so that a failed growth leaves the old one in place and registered, never freed twice.
   */
  scratch(device: Pick<Device, 'alloc' | 'free'>, name: string, length: number, dtype: BufferDType): DeviceBuffer {
    let named = this.scratchBuffers.get(dtype);
    const have = named?.get(name);
    if (have && have.length >= length) return have;
    const buf = device.alloc(Math.max(length, (have?.length ?? 0) * 2), dtype, 'scratch');
    if (have) device.free(have);
    if (!named) this.scratchBuffers.set(dtype, (named = new Map()));
    named.set(name, buf);
    return buf;
  }

  /** What `memory()` reports, without the backend's own extras. */
  report(): DeviceMemory {
    const components: Record<string, number> = {};
    for (const [tag, bytes] of this.tags) if (bytes !== 0) components[tag] = bytes;
    return { device: this.tiers.device, host: this.tiers.host, components };
  }

  /** Forgets everything (the device was disposed). */
  clear(): void {
    this.scratchBuffers.clear();
    this.tags.clear();
    this.tiers.device = this.tiers.host = 0;
  }
}
