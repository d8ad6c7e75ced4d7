import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../packages/shadowkv/src/backend.js';
import { BpeTokenizer, ByteTokenizer, TokenizerError } from '../../packages/llama/src/index.js';
import { BYTE_CHAR } from '../../packages/llama/src/tokenizer/byteLevel.js';
import { caseInsensitiveGroups } from '../../packages/llama/src/tokenizer/preTokenize.js';

const TEXTS = ['hello world', "Hello world, it's 2024!\n\n  indented\ttab", 'héllo wörld — 日本語 🙂 𝔘', "THEY'LL hello's 12345", ''];

// Llama-3's pre-tokenizer, as its tokenizer.json spells it.
const LLAMA3_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const MERGES = ['h e', 'l l', 'he ll', 'hell o', 'Ġ w', 'o r', 'Ġw or', 'Ġwor l', 'Ġworl d', "' s", '1 2', '12 3'];

/** A small byte-level BPE tokenizer.json: the 256 byte symbols (ids in byte order), a few merges, one added token. */
function tokenizerJson(options: { preTokenizer?: unknown; ignoreMerges?: boolean; merges?: unknown[] } = {}) {
  const vocab: Record<string, number> = Object.fromEntries(BYTE_CHAR.map((c, b) => [c, b]));
  const merges = options.merges ?? MERGES;
  for (const m of merges) {
    const [a, b] = typeof m === 'string' ? m.split(' ') : (m as string[]);
    vocab[a! + b!] ??= Object.keys(vocab).length;
  }
  return {
    version: '1.0',
    added_tokens: [{ id: 300, content: '<|eot|>', special: true }],
    normalizer: null,
    pre_tokenizer: options.preTokenizer ?? {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: LLAMA3_SPLIT }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    decoder: { type: 'ByteLevel' },
    model: { type: 'BPE', ignore_merges: options.ignoreMerges ?? false, vocab, merges },
  };
}

describe('ByteTokenizer', () => {
  it.each(TEXTS)('round-trips %j through UTF-8 bytes', (text) => {
    const tok = new ByteTokenizer();
    const ids = tok.encode(text);
    expect(ids).toEqual(Array.from(Buffer.from(text, 'utf8')));
    expect(tok.decode(ids)).toBe(text);
  });

  it('special tokens follow the bytes; an id outside the vocabulary is a TokenizerError', () => {
    const tok = new ByteTokenizer({ specials: ['<bos>', '<eos>'] });
    expect([tok.vocabSize, tok.tokenId('<eos>'), tok.tokenId('<pad>')]).toEqual([258, 257, undefined]);
    expect(tok.decode([104, 257])).toBe('h<eos>');
    expect(() => tok.decode([258])).toThrow(TokenizerError);
    expect(() => tok.tokenBytes(-1)).toThrow(/outside the vocabulary \[0, 258\)/);
  });

  it('a stream decoder holds a character split over tokens until its last byte', () => {
    const tok = new ByteTokenizer();
    const stream = tok.streamDecoder();
    expect(tok.encode('a🙂').map((id) => stream.push(id))).toEqual(['a', '', '', '', '🙂']);
    expect(stream.flush()).toBe('');
  });
});

describe('BpeTokenizer (tokenizer.json, byte-level BPE)', () => {
  const tok = new BpeTokenizer(tokenizerJson());
  const id = (token: string) => tok.tokenId(token)!;

  it.each(TEXTS)('round-trips %j', (text) => {
    expect(tok.decode(tok.encode(text))).toBe(text);
  });

  it('merges by rank within each pre-tokenized piece', () => {
    expect(tok.encode('hello world')).toEqual([id('hello'), id('Ġworld')]);
    expect(tok.encode("hello's")).toEqual([id('hello'), id("'s")]); // the contraction is its own piece
    expect(tok.encode('12345')).toEqual([id('123'), id('4'), id('5')]); // digits in pieces of at most 3
  });

  it('an added token is cut out of the text first and decodes to its content', () => {
    const ids = tok.encode('hello<|eot|>world');
    expect(ids).toEqual([id('hello'), 300, id('w'), id('or'), id('l'), id('d')]);
    expect(tok.decode(ids)).toBe('hello<|eot|>world');
    expect(tok.vocabSize).toBe(301);
  });

  it('ignore_merges takes a whole piece that is in the vocab as one token', () => {
    const merges = ['a b', 'b c', 'a bc'];
    const plain = new BpeTokenizer(tokenizerJson({ merges }));
    const ignoring = new BpeTokenizer(tokenizerJson({ merges, ignoreMerges: true }));
    // By rank, "abc" merges a+b first and then has no rule for "ab"+"c"; the vocab holds "abc" whole.
    expect(plain.encode('abc')).toEqual([plain.tokenId('ab'), plain.tokenId('c')]);
    expect(ignoring.encode('abc')).toEqual([ignoring.tokenId('abc')]);
  });

  it('GPT-2 style (ByteLevel with its own regex, a prefix space) round-trips and merges the same words', () => {
    const gpt2 = new BpeTokenizer(tokenizerJson({ preTokenizer: { type: 'ByteLevel', add_prefix_space: true, use_regex: true } }));
    expect(gpt2.encode('world')).toEqual([gpt2.tokenId('Ġworld')]);
    expect(gpt2.decode(gpt2.encode('hello world'))).toBe(' hello world');
  });

  it("(?i:...) groups become case-insensitive JS groups: 'LL and 'll both match", () => {
    const re = new RegExp(`^(?:${caseInsensitiveGroups("(?i:'s|'ll)")})$`, 'u');
    expect(["'ll", "'LL", "'S", "'s"].every((s) => re.test(s))).toBe(true);
    expect(re.test("'x")).toBe(false);
  });

  const MALFORMED: [string, unknown, RegExp][] = [
    ['a WordPiece model', { ...tokenizerJson(), model: { type: 'WordPiece', vocab: {} } }, /only byte-level BPE/],
    ['a vocab without every byte symbol', (() => { const j = tokenizerJson(); delete (j.model.vocab as Record<string, number>)['Ġ']; return j; })(), /lacks the byte symbol 'Ġ'/],
    ['a merge whose result is not in the vocab', (() => { const j = tokenizerJson(); j.model.merges = [...MERGES, 'x y']; return j; })(), /makes 'xy', which is not in the vocab/],
    ['a normalizer', { ...tokenizerJson(), normalizer: { type: 'NFKC' } }, /normalizer 'NFKC'/],
    ['a Metaspace pre-tokenizer', tokenizerJson({ preTokenizer: { type: 'Metaspace' } }), /type 'Metaspace' is not supported/],
    ['text that is not JSON', '{"model": ', /not JSON/],
    ['added_tokens that are an object', { ...tokenizerJson(), added_tokens: {} }, /added_tokens must be a list/],
    ['added_tokens that are a number', { ...tokenizerJson(), added_tokens: 5 }, /added_tokens must be a list/],
    ['a null step in a Sequence pre-tokenizer', tokenizerJson({ preTokenizer: { type: 'Sequence', pretokenizers: [null, { type: 'ByteLevel' }] } }), /a step must be an object with a type, got null/],
    ['a Sequence without a list', tokenizerJson({ preTokenizer: { type: 'Sequence', pretokenizers: { type: 'ByteLevel' } } }), /Sequence needs a list of pretokenizers/],
    ['a pre-tokenizer that is a number', tokenizerJson({ preTokenizer: 7 }), /a step must be an object/],
  ];
  it.each(MALFORMED)('%s is a TokenizerError', (_, json, message) => {
    expect(() => new BpeTokenizer(json)).toThrow(TokenizerError);
    expect(() => new BpeTokenizer(json)).toThrow(message);
  });

  // Loaded from a file, the same problems name the file by its path (not a bare tokenizer.json).
  it.each(MALFORMED)('from a file, %s names its path', async (_, json, message) => {
    const dir = mkdtempSync(`${tmpdir()}/skv-tok-`);
    const path = `${dir}/tokenizer.json`;
    writeFileSync(path, typeof json === 'string' ? json : JSON.stringify(json));
    const err = await BpeTokenizer.load(path).then(() => undefined, (e: unknown) => e);
    rmSync(dir, { recursive: true });
    expect(err).toBeInstanceOf(TokenizerError);
    expect((err as Error).message.startsWith(`${path}: `)).toBe(true);
    expect((err as Error).message).toMatch(message);
  });

  it('any JSON in any part of tokenizer.json: a tokenizer, or a TokenizerError (never a TypeError)', () => {
    const base = tokenizerJson();
    const part = fc.constantFrom('added_tokens', 'pre_tokenizer', 'normalizer', 'model', 'model.vocab', 'model.merges', 'pre_tokenizer.pretokenizers', 'pre_tokenizer.pretokenizers.0');
    fc.assert(
      fc.property(part, fc.jsonValue(), (path, value) => {
        const json = structuredClone(base) as Record<string, unknown>;
        const keys = path.split('.');
        let at: Record<string, unknown> = json;
        for (const k of keys.slice(0, -1)) at = at[k] as Record<string, unknown>;
        at[keys.at(-1)!] = value;
        try {
          new BpeTokenizer(json).encode("hello world, it's 12345");
          return true;
        } catch (err) {
          return err instanceof TokenizerError;
        }
      }),
      { numRuns: 400 },
    );
  });

  it('a piece of 150K characters (one word, no spaces) encodes: no argument list as long as the piece', () => {
    const long = 'hello'.repeat(30_000);
    const ids = tok.encode(long);
    expect(ids).toEqual(Array(30_000).fill(id('hello')));
    expect(tok.decode(tok.encode('a'.repeat(150_001)))).toHaveLength(150_001);
  });

  it('BpeTokenizer.load of a file that cannot be read is a TokenizerError naming it', async () => {
    const dir = mkdtempSync(`${tmpdir()}/skv-tok-`);
    for (const path of [`${dir}/missing.json`, dir]) {
      const err = await BpeTokenizer.load(path).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TokenizerError);
      expect((err as Error).message).toContain(`${path} cannot be read`);
    }
  });
});

describe('ByteTokenizer options', () => {
  it.each([[{ special: ['<eos>'] }], [{ specials: '<eos>' }], [{ specials: [''] }], [null]])('%j is a ConfigError', (options) => {
    expect(() => new ByteTokenizer(options as never)).toThrow(ConfigError);
  });
});
