import { ShadowKVError } from './ShadowKVError.js';

/** A call would grow a sequence past `maxTokens`, or past a model's positions (shadowkv-llama: `config.maxPositions`). */
export class CapacityError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_CAPACITY', message);
  }
}
