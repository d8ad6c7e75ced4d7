import { ShadowKVError } from './ShadowKVError.js';

/** A runtime could not allocate memory (e.g. the 4 GB wasm32 heap is full). */
export class OutOfMemoryError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_OUT_OF_MEMORY', message);
  }
}
