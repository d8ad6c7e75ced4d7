import { ShadowKVError } from '../../../shadowkv/src/errors/ShadowKVError.js';

/** A `tokenizer.json` this package cannot run (malformed, or a model type other than byte-level BPE), an id outside the vocabulary, or text that is not a string UTF-8 can encode. */
export class TokenizerError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_TOKENIZER', message);
  }
}
