import { ShadowKVError } from './ShadowKVError.js';

/** A device tensor passed to a cache that cannot read it: made on another backend, or by another cache's wasm heap. */
export class DeviceMismatchError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_DEVICE_MISMATCH', message);
  }
}
