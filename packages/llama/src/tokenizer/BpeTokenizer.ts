import { fmt } from '../../../shadowkv/src/policies/validate.js';
import { TokenizerError } from '../errors/TokenizerError.js';
import { BYTE_CHAR, CHAR_BYTE, toByteLevel } from './byteLevel.js';
import { preTokenizer, type PreTokenizer } from './preTokenize.js';
import { Tokenizer } from './Tokenizer.js';

type Json = Record<string, unknown>;

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
// NOTE: byte-level symbols never contain NUL (byte 0 is written U+0100), so it can join a pair's key.
const pairKey = (a: string, b: string) => `${a}\u0000${b}`;

/**
 * Byte-level BPE from a Hugging Face `tokenizer.json` (GPT-2, Llama-3 and their kin): added tokens
 * are cut out first, the pre-tokenizer splits the rest, each piece is written in the byte alphabet
 * and merged by rank. Other models (SentencePiece-style BPE with byte fallback, WordPiece, Unigram)
 * and normalizers are a `TokenizerError`; post-processor templates (a BOS) are left to the caller.
 * @example
 * const tok = await BpeTokenizer.load('./my-llama/tokenizer.json');
 * const ids = [tok.tokenId('<|begin_of_text|>')!, ...tok.encode('Hello world')];
 */
export class BpeTokenizer extends Tokenizer {
  readonly vocabSize: number;
  private readonly vocab: Map<string, number>;
  private readonly tokens: string[] = []; // id -> token string (byte alphabet, or an added token's text)
  private readonly added = new Map<string, number>();
  private readonly addedPattern: RegExp | undefined;
  private readonly ranks = new Map<string, number>();
  private readonly split: PreTokenizer;
  private readonly ignoreMerges: boolean;
  private readonly words = new Map<string, number[]>(); // piece -> ids, memoized
  private readonly bytes: (Uint8Array | undefined)[] = [];
  private readonly utf8 = new TextEncoder();

  /** Reads a parsed (or string) `tokenizer.json`; `file` names it in errors (`load` passes its path). */
  constructor(json: unknown, file = 'tokenizer.json') {
    super();
    try {
      const root = (typeof json === 'string' ? parse(json) : json) as Json | null;
      const model = root?.model as Json | undefined;
      if (!model || model.type !== 'BPE') throw new TokenizerError(`model.type is '${String(model?.type)}'; only byte-level BPE is supported`);
      if (model.byte_fallback === true || model.continuing_subword_prefix || model.end_of_word_suffix) {
        throw new TokenizerError('byte_fallback, continuing_subword_prefix and end_of_word_suffix are not supported (byte-level BPE only)');
      }
      if (root!.normalizer !== null && root!.normalizer !== undefined) throw new TokenizerError(`normalizer '${String((root!.normalizer as Json).type)}' is not supported`);
      const pre = preTokenizer(root!.pre_tokenizer);
      if (!pre.byteLevel) throw new TokenizerError('the pre_tokenizer has no ByteLevel step; only byte-level BPE is supported');
      this.split = pre.split;
      this.ignoreMerges = model.ignore_merges === true;
      this.vocab = readVocab(model.vocab);
      for (const [token, id] of this.vocab) this.tokens[id] = token;
      for (const b of BYTE_CHAR) if (!this.vocab.has(b)) throw new TokenizerError(`the vocab lacks the byte symbol '${b}' (byte ${CHAR_BYTE.get(b)}); byte-level BPE needs all 256`);
      this.readMerges(model.merges);
      const added = root!.added_tokens ?? [];
      if (!Array.isArray(added)) throw new TokenizerError(`added_tokens must be a list, got ${fmt(added)}`);
      for (const t of added as (Json | null)[]) {
        if (typeof t?.content !== 'string' || !t.content || !Number.isSafeInteger(t.id) || (t.id as number) < 0) throw new TokenizerError(`added token ${JSON.stringify(t)} needs a content string and an id`);
        this.added.set(t.content, t.id as number);
        this.tokens[t.id as number] = t.content;
      }
      const contents = [...this.added.keys()].sort((a, b) => b.length - a.length); // longest first
      this.addedPattern = contents.length ? new RegExp(contents.map(escape).join('|'), 'gu') : undefined;
      this.vocabSize = this.tokens.length;
    } catch (err) {
      // NOTE: the checks name the field; the file is named once, here.
      if (err instanceof TokenizerError) throw new TokenizerError(`${file}: ${err.message}`);
      throw err;
    }
  }

  /** Reads `tokenizer.json` from a file (Node); a file that cannot be read is a `TokenizerError` too. */
  static async load(path: string): Promise<BpeTokenizer> {
    const { readFile } = await import('node:fs/promises');
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new TokenizerError(`${path} cannot be read: ${(err as Error).message}`);
    }
    return new BpeTokenizer(text, path);
  }

  private readMerges(merges: unknown): void {
    if (!Array.isArray(merges)) throw new TokenizerError('model.merges is not a list');
    merges.forEach((m, rank) => {
      const pair = typeof m === 'string' ? m.split(' ') : m;
      if (!Array.isArray(pair) || pair.length !== 2 || !pair.every((s) => typeof s === 'string')) throw new TokenizerError(`merge ${rank} is ${JSON.stringify(m)}, expected "a b" or ["a", "b"]`);
      const [a, b] = pair as [string, string];
      if (!this.vocab.has(a + b)) throw new TokenizerError(`merge ${rank} (${JSON.stringify(m)}) makes '${a + b}', which is not in the vocab`);
      if (!this.ranks.has(pairKey(a, b))) this.ranks.set(pairKey(a, b), rank);
    });
  }

  /** The id of a token (an added token's text, or a vocab entry in the byte alphabet), or undefined. */
  tokenId(token: string): number | undefined {
    return this.added.get(token) ?? this.vocab.get(token);
  }

  encode(text: string): number[] {
    this.checkText(text);
    const ids: number[] = [];
    let last = 0;
    for (const m of this.addedPattern ? text.matchAll(this.addedPattern) : []) {
      this.encodePlain(text.slice(last, m.index), ids);
      ids.push(this.added.get(m[0])!);
      last = m.index + m[0].length;
    }
    this.encodePlain(text.slice(last), ids);
    return ids;
  }

  private encodePlain(text: string, ids: number[]): void {
    if (!text) return;
    for (const piece of this.split(text)) {
      let word = this.words.get(piece);
      if (!word) {
        word = this.merge(toByteLevel(piece, this.utf8));
        if (this.words.size < 65536) this.words.set(piece, word); // a bound, so a long unique text cannot grow it without end
      }
      // NOTE: a loop, not push(...word): a long piece (base64, minified code) spread as arguments overflows the stack.
      for (const id of word) ids.push(id);
    }
  }

  /** BPE on one piece: merge the lowest-ranked adjacent pair everywhere until no pair has a rank. */
  private merge(word: string): number[] {
    const whole = this.ignoreMerges ? this.vocab.get(word) : undefined;
    if (whole !== undefined) return [whole];
    let symbols = Array.from(word);
    for (;;) {
      let best = Infinity;
      for (let i = 0; i + 1 < symbols.length; i++) best = Math.min(best, this.ranks.get(pairKey(symbols[i]!, symbols[i + 1]!)) ?? Infinity);
      if (best === Infinity) break;
      const merged: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i + 1 < symbols.length && this.ranks.get(pairKey(symbols[i]!, symbols[i + 1]!)) === best) merged.push(symbols[i]! + symbols[++i]!);
        else merged.push(symbols[i]!);
      }
      symbols = merged;
    }
    // NOTE: every symbol is in the vocab: single bytes and merge results were checked at load.
    return symbols.map((s) => this.vocab.get(s)!);
  }

  tokenBytes(id: number): Uint8Array {
    // NOTE: the id is checked before the cache is read: bytes['length'] is a number, bytes['5'] token 5's bytes.
    const token = Number.isInteger(id) ? this.tokens[id] : undefined;
    if (token === undefined) throw this.outside(id);
    const cached = this.bytes[id];
    if (cached) return cached;
    const bytes = this.added.get(token) === id ? this.utf8.encode(token) : Uint8Array.from(Array.from(token), (c) => {
      const b = CHAR_BYTE.get(c);
      if (b === undefined) throw new TokenizerError(`BpeTokenizer: token ${id} ('${token}') has a character outside the byte-level alphabet`);
      return b;
    });
    this.bytes[id] = bytes;
    return bytes;
  }
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new TokenizerError(`not JSON: ${(err as Error).message}`);
  }
}

function readVocab(vocab: unknown): Map<string, number> {
  if (vocab === null || typeof vocab !== 'object' || Array.isArray(vocab)) throw new TokenizerError('model.vocab is not an object of token -> id');
  const map = new Map<string, number>();
  for (const [token, id] of Object.entries(vocab)) {
    if (!Number.isSafeInteger(id) || (id as number) < 0) throw new TokenizerError(`vocab entry '${token}' has id ${JSON.stringify(id)}`);
    map.set(token, id as number);
  }
  return map;
}
