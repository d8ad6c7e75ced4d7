// The model loop's contract under odd and hostile use: input that cannot be what the caller meant is a
// typed error naming the problem, never a silent guess; a model used after dispose, or a cache row
// written by someone else in the middle of a call, is refused rather than computed on.
import { describe, expect, it } from 'vitest';
import { BpeTokenizer, ByteTokenizer, TokenizerError } from '../../packages/llama/src/index.js';
import { BYTE_CHAR } from '../../packages/llama/src/tokenizer/byteLevel.js';

const BPE = new BpeTokenizer({ model: { type: 'BPE', vocab: Object.fromEntries(BYTE_CHAR.map((c, b) => [c, b])), merges: [] }, pre_tokenizer: { type: 'ByteLevel' } });

describe.each([['ByteTokenizer', new ByteTokenizer()], ['BpeTokenizer', BPE]] as const)('%s: encode and decode refuse what has no UTF-8', (name, tokenizer) => {
  it.each([123, undefined, null, ['a']])('encode(%o) is a TokenizerError, not its String() encoded', (text) => {
    expect(() => tokenizer.encode(text as never)).toThrow(TokenizerError);
    expect(() => tokenizer.encode(text as never)).toThrow(`${name}.encode: text must be a string`);
  });

  it('a lone surrogate is a TokenizerError naming where it is, not U+FFFD', () => {
    expect(() => tokenizer.encode('ab\ud83d')).toThrow(/lone surrogate U\+D83D at index 2/);
    expect(() => tokenizer.encode('\udc00x')).toThrow(TokenizerError);
    expect(tokenizer.decode(tokenizer.encode('a 🙂 b'))).toBe('a 🙂 b'); // a whole pair is one character
    expect(tokenizer.encode('')).toEqual([]);
  });

  it('decode of what is not a list is a TokenizerError', () => {
    expect(() => tokenizer.decode('abc' as never)).toThrow(`${name}.decode: ids must be a list of token ids, got "abc"`);
  });
});
