import { ShadowKVError } from './ShadowKVError.js';

/** A layer index outside `[0, spec.layers)`. */
export class LayerIndexError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_LAYER_INDEX', message);
  }
}
