import { ShadowKVError } from '../../../shadowkv/src/errors/ShadowKVError.js';

/** A `tokenizer.json` this package cannot run (malformed, or a model type other than byte-level BPE), or an id outside the vocabulary. */
export class TokenizerError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_TOKENIZER', message);
  }
}
