import { ShadowKVError } from './ShadowKVError.js';

/** The cache was used after `dispose()`. */
export class DisposedError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_DISPOSED', message);
  }
}
