import { ShadowKVError } from './ShadowKVError.js';

/** A snapshot is truncated, altered, of another format version, or does not fit the requested cache. */
export class SnapshotError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_SNAPSHOT', message);
  }
}
