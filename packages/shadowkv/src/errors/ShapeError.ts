import { ShadowKVError } from './ShadowKVError.js';

/** A tensor's shape (or data length) does not match the model spec or the call. */
export class ShapeError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_SHAPE', message);
  }
}
