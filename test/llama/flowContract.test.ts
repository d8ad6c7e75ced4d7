// The model loop's contract under odd and hostile use: input that cannot be what the caller meant is a
// typed error naming the problem, never a silent guess; a model used after dispose, or a cache row
// written by someone else in the middle of a call, is refused rather than computed on.
import { describe, expect, it } from 'vitest';
import { ConfigError, createCache, DisposedError, type KVCachePolicy } from '../../packages/shadowkv/src/backend.js';
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
