import { ShadowKVError } from './ShadowKVError.js';

/** Bytes asked for and bytes available, per tier, when a cache was refused up front. */
export interface MemoryShortfall {
  /** Device bytes needed at the peak, including `transient` (one row compressing, or one row's tail growing). */
  device: number;
  transient: number;
  host: number;
  available: { device: number; host: number; shared: boolean };
}

/**
 * A runtime could not allocate memory (e.g. the 4 GB wasm32 heap is full), or, at creation, a
 * cache's estimated needs do not fit what the backend has left (`shortfall` then says by how much).
 */
export class OutOfMemoryError extends ShadowKVError {
  /** Set when creation refused the cache before allocating anything. */
  readonly shortfall?: MemoryShortfall;

  /** @internal */
  constructor(message: string, shortfall?: MemoryShortfall) {
    super('SKV_OUT_OF_MEMORY', message);
    if (shortfall) this.shortfall = shortfall;
  }
}
