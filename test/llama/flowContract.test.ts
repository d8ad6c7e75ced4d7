// The model loop's contract under odd and hostile use: input that cannot be what the caller meant is a
// typed error naming the problem, never a silent guess; a model used after dispose, or a cache row
// written by someone else in the middle of a call, is refused rather than computed on.
import { describe, expect, it } from 'vitest';
import { ConfigError, createCache, DisposedError, ReentrancyError, type KVCachePolicy } from '../../packages/shadowkv/src/backend.js';
import { BpeTokenizer, ByteTokenizer, generate, LlamaModel, TokenizerError, type GeneratedToken } from '../../packages/llama/src/index.js';
import { BYTE_CHAR } from '../../packages/llama/src/tokenizer/byteLevel.js';
import { GQA, memoryCheckpoint } from './fixtures.js';

const cacheFor = (model: LlamaModel, policy = 'full', batch = 1) => createCache({ spec: model.spec, policy, backend: 'wasm', dtype: 'f32', maxTokens: 48, batch }) as Promise<KVCachePolicy>;
const drain = async (tokens: AsyncIterable<GeneratedToken>) => {
  const ids: number[] = [];
  for await (const t of tokens) ids.push(t.id);
  return ids;
};

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

describe('LlamaModel: what is not a checkpoint, and a model after dispose', () => {
  it.each([null, undefined, {}, { config: {}, spec: {} }, 'dir'])('create(%o) is a ConfigError naming the call', async (checkpoint) => {
    await expect(LlamaModel.create(checkpoint as never, { matmul: 'js' })).rejects.toThrow(/^LlamaModel\.create: checkpoint must be a Checkpoint/);
    await expect(LlamaModel.create(checkpoint as never, { matmul: 'js' })).rejects.toBeInstanceOf(ConfigError);
  });

  it.each(['js', 'wasm'] as const)("with matmul '%s', forward, prefill and generate after dispose are a DisposedError and leave the cache as it was", async (matmul) => {
    const model = await LlamaModel.create(memoryCheckpoint(GQA, { seed: 3 }).checkpoint, { matmul, threads: 1 });
    const cache = await cacheFor(model);
    model.prefill([1, 2, 3], cache);
    model.dispose();
    expect(() => model.forward([4], cache)).toThrow(DisposedError);
    expect(() => model.prefill([4, 5], cache)).toThrow('LlamaModel.prefill: the model was disposed');
    await expect(drain(generate(model, cache, [4]))).rejects.toThrow(DisposedError);
    expect(cache.length(0)).toBe(3);
    expect(() => model.dispose()).not.toThrow();
  });
});

describe('a cache row written by another call in the middle of generate or prefill', () => {
  it('two generations on one row: the second writer makes the first throw a ReentrancyError; other rows interleave freely', async () => {
    const model = await LlamaModel.create(memoryCheckpoint(GQA, { seed: 3 }).checkpoint, { matmul: 'js' });
    const alone = async (prompt: number[]) => drain(generate(model, await cacheFor(model), prompt, { maxNewTokens: 5 }));
    const cache = await cacheFor(model, 'full', 2);
    const a = generate(model, cache, [1, 2, 3], { maxNewTokens: 5 });
    const b = generate(model, cache, [7, 8], { maxNewTokens: 5, sequence: 1 });
    const [ia, ib]: number[][] = [[], []];
    for (let i = 0; i < 5; i++) {
      ia.push((await a.next()).value!.id);
      ib.push((await b.next()).value!.id);
    }
    expect([ia, ib]).toEqual([await alone([1, 2, 3]), await alone([7, 8])]);

    const first = generate(model, cache, [4], { maxNewTokens: 5 });
    await first.next();
    const second = generate(model, cache, [5], { maxNewTokens: 5 });
    await second.next();
    await expect(first.next()).rejects.toThrow(ReentrancyError);
    expect(cache.length(0)).toBe(9); // 3 + 4 tokens of the first run, then [4] and [5]: nothing of the refused step
    cache.reset(0);
    await expect(second.next()).rejects.toThrow('generate: cache row 0 went from 9 to 0 tokens between two generated tokens');
  });

  it('a forward or reset on the row from onPrefill is a ReentrancyError, and the row goes back', async () => {
    const model = await LlamaModel.create(memoryCheckpoint(GQA, { seed: 3 }).checkpoint, { matmul: 'js' });
    const cache = await cacheFor(model);
    model.prefill([1, 2], cache);
    const prompt = [3, 4, 5, 6, 7];
    await expect(drain(generate(model, cache, prompt, { chunkTokens: 2, onPrefill: (done) => void (done === 2 && model.forward([9], cache)) }))).rejects.toThrow('LlamaModel.prefill: onProgress changed cache row 0 from 4 to 5 tokens');
    expect(cache.length(0)).toBe(2);
    expect(() => model.prefill(prompt, cache, { onProgress: () => cache.reset(0) })).toThrow(ReentrancyError);
  });
});
