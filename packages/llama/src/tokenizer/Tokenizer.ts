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
  abstract encode(text: string): number[];
  /** The bytes (UTF-8) a token stands for. Throws `TokenizerError` for an id outside the vocabulary. */
  abstract tokenBytes(id: number): Uint8Array;

  /** The text of a sequence of ids (invalid UTF-8 becomes U+FFFD). */
  decode(ids: readonly number[]): string {
    const stream = this.streamDecoder();
    return ids.map((id) => stream.push(id)).join('') + stream.flush();
  }

  /** A decoder for tokens arriving one at a time. */
  streamDecoder(): StreamDecoder {
    return new StreamDecoder(this);
  }

  protected outside(id: number): TokenizerError {
    return new TokenizerError(`${this.constructor.name}: token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
  }
}
