import { ShadowKVError } from './ShadowKVError.js';

/** A sequence (batch row) index outside `[0, batch)`, or repeated in one call. */
export class SequenceIndexError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_SEQUENCE_INDEX', message);
  }
}
