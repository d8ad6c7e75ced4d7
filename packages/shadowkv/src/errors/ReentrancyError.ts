import { ShadowKVError } from './ShadowKVError.js';

/** A cache method was called while another call on the same cache was running (e.g. from a getter of its input). */
export class ReentrancyError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_REENTRANT', message);
  }
}
