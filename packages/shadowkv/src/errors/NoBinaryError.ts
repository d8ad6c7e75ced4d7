import { ShadowKVError } from './ShadowKVError.js';

/** A native backend was requested but its package or binary could not be loaded. */
export class NoBinaryError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_NO_BINARY', message);
  }
}
