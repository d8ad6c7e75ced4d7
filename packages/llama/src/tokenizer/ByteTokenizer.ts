import { checkKeys } from '../../../shadowkv/src/config.js';
import { ConfigError } from '../../../shadowkv/src/errors/ConfigError.js';
import { fmt } from '../../../shadowkv/src/policies/validate.js';
import { Tokenizer } from './Tokenizer.js';

/**
 * One token per UTF-8 byte (ids 0-255), then optional special tokens (256, 257, …) that only
 * `tokenId` produces: what a byte-level model reads.
 * @example
 * const tok = new ByteTokenizer({ specials: ['<eos>'] });
 * tok.encode('hé'); // [104, 195, 169]
 */
export class ByteTokenizer extends Tokenizer {
  readonly vocabSize: number;
  private readonly specials: readonly string[];
  private readonly utf8 = new TextEncoder();

  constructor(options: { specials?: readonly string[] } = {}) {
    super();
    checkKeys('ByteTokenizer options', options, ['specials']);
    const specials = options.specials ?? [];
    if (!Array.isArray(specials) || !specials.every((t) => typeof t === 'string' && t !== '')) throw new ConfigError(`ByteTokenizer: specials must be a list of non-empty strings, got ${fmt(specials)}`);
    this.specials = specials;
    this.vocabSize = 256 + this.specials.length;
  }

  encode(text: string): number[] {
    this.checkText(text);
    return Array.from(this.utf8.encode(text));
  }

  tokenBytes(id: number): Uint8Array {
    // NOTE: the id is checked first: a BigInt or a Symbol in `id - 256` is a TypeError.
    if (!Number.isInteger(id)) throw this.outside(id);
    if (id >= 0 && id < 256) return Uint8Array.of(id);
    const special = this.specials[id - 256];
    if (special === undefined) throw this.outside(id);
    return this.utf8.encode(special);
  }

  /** The id of a special token, or undefined. */
  tokenId(special: string): number | undefined {
    const i = this.specials.indexOf(special);
    return i < 0 ? undefined : 256 + i;
  }
}
