import { ShadowKVError } from './ShadowKVError.js';

/** An input holds NaN or Infinity. */
export class NonFiniteError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_NON_FINITE', message);
  }
}
