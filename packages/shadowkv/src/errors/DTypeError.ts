import { ShadowKVError } from './ShadowKVError.js';

/** A tensor's dtype is unknown, differs from its data's type, or differs between inputs of one call. */
export class DTypeError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_DTYPE', message);
  }
}
