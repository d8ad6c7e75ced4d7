import { fmt } from '../../../shadowkv/src/policies/validate.js';
import { TokenizerError } from '../errors/TokenizerError.js';

/** Turns token ids back into text as they arrive: a character split over tokens comes out whole, once. */
export class StreamDecoder {
  private readonly utf8 = new TextDecoder('utf-8');

  constructor(private readonly tokenizer: Tokenizer) {}

  /** The text the token completes ('' while a multi-byte character is still incomplete). */
  push(id: number): string {
    return this.utf8.decode(this.tokenizer.tokenBytes(id), { stream: true });
  }

  /** What is left (an incomplete character becomes U+FFFD). */
  flush(): string {
    return this.utf8.decode();
  }
}

/** Text <-> token ids. Subclasses say how text is cut and what bytes each id stands for; decoding is shared. */
export abstract class Tokenizer {
  /** Ids are `0 .. vocabSize - 1`. */
  abstract readonly vocabSize: number;
  /** The ids of `text`. Throws `TokenizerError` for what is not a string or has a lone surrogate (`checkText`). */
  abstract encode(text: string): number[];
  /** The bytes (UTF-8) a token stands for. Throws `TokenizerError` for an id outside the vocabulary. */
  abstract tokenBytes(id: number): Uint8Array;

  /** The text of a sequence of ids (invalid UTF-8 becomes U+FFFD); an id that is not an integer of the vocabulary is a `TokenizerError`. */
  decode(ids: readonly number[]): string {
    const call = `${this.constructor.name}.decode`;
    if (!Array.isArray(ids)) throw new TokenizerError(`${call}: ids must be a list of token ids, got ${fmt(ids)}`);
    const stream = this.streamDecoder();
    let text = '';
    // NOTE: a for loop, not map: map skips the holes of a sparse list, whose ids would vanish from the text.
    for (let i = 0; i < ids.length; i++) {
      if (!Number.isInteger(ids[i])) throw new TokenizerError(`${call}: ids[${i}] is ${i in ids ? fmt(ids[i]) : 'a hole'}, not a token id`);
      text += stream.push(ids[i]!);
    }
    return text + stream.flush();
  }

  /** A decoder for tokens arriving one at a time. */
  streamDecoder(): StreamDecoder {
    return new StreamDecoder(this);
  }

  /**
   * Throws a TokenizerError unless `text` is a string UTF-8 can encode. Left to TextEncoder, a number
   * would be encoded as its digits, undefined as nothing, and a lone surrogate (a string cut inside a
   * pair) as U+FFFD: a prompt other than the one given, without an error.
   */
  protected checkText(text: unknown): asserts text is string {
    const call = `${this.constructor.name}.encode`;
    if (typeof text !== 'string') throw new TokenizerError(`${call}: text must be a string, got ${fmt(text)}`);
    // NOTE: with the u flag a surrogate pair is one code point, so only a lone half matches.
    const lone = /[\uD800-\uDFFF]/u.exec(text);
    if (lone) throw new TokenizerError(`${call}: text has a lone surrogate U+${lone[0].charCodeAt(0).toString(16).toUpperCase()} at index ${lone.index}, which UTF-8 cannot encode (a string cut inside a surrogate pair?)`);
  }

  protected outside(id: number): TokenizerError {
    return new TokenizerError(`${this.constructor.name}: token id ${fmt(id)} is outside the vocabulary [0, ${this.vocabSize})`); // fmt: a symbol in a template is a TypeError
  }
}
