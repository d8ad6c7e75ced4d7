// The generation, tokenizer and loading API under an adversarial user: what the earlier contracts
// (flowContract, rejectedCall, options) left open. Each case was a silent wrong answer, a TypeError
// from deep inside, or an error that came only after the work was done.
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, createCache, ReentrancyError, type KVCachePolicy } from '../../packages/shadowkv/src/backend.js';
import {
  BpeTokenizer, ByteTokenizer, CheckpointError, checkpointFiles, generate, hfConfigJson, LlamaModel, loadCheckpoint, randomWeights, readCheckpoint, TokenizerError,
  type GeneratedToken, type LlamaConfig,
} from '../../packages/llama/src/index.js';
import { BYTE_CHAR } from '../../packages/llama/src/tokenizer/byteLevel.js';
import { GQA, MHA, memoryCheckpoint } from './fixtures.js';

const BUNDLED = new URL('../../models/skv-small/', import.meta.url).pathname;

let model: LlamaModel;
beforeAll(async () => {
  model = await LlamaModel.create(memoryCheckpoint(GQA, { seed: 3 }).checkpoint, { matmul: 'js' });
});

const cacheFor = (m: LlamaModel) => createCache({ spec: m.spec, policy: 'full', backend: 'wasm', dtype: 'f32', maxTokens: 64 }) as Promise<KVCachePolicy>;
const drain = async (tokens: AsyncIterable<GeneratedToken>) => {
  const got: GeneratedToken[] = [];
  for await (const t of tokens) got.push(t);
  return got;
};

describe('generate: a suspended generation whose row another call refilled', () => {
  it('a reset and a prompt as long as the row between two tokens: the waiting generation throws a ReentrancyError, it does not go on from the other prompt', async () => {
    const cache = await cacheFor(model);
    const first = generate(model, cache, [1, 2, 3, 4], { maxNewTokens: 4 });
    await first.next();
    cache.reset(0);
    const second = generate(model, cache, [9, 8, 7, 6], { maxNewTokens: 4 }); // the row holds 4 tokens again
    const secondIds = [(await second.next()).value!.id];
    await expect(first.next()).rejects.toThrow(ReentrancyError);
    await expect(first.next()).resolves.toMatchObject({ done: true });
    // The generation that owns the row now goes on as if alone.
    for await (const t of second) secondIds.push(t.id);
    const alone = (await drain(generate(model, await cacheFor(model), [9, 8, 7, 6], { maxNewTokens: 4 }))).map((t) => t.id);
    expect(secondIds).toEqual(alone);
    expect(cache.length(0)).toBe(4 + 3);
  });

  it('the message says the row was written though its length is the same', async () => {
    const cache = await cacheFor(model);
    const first = generate(model, cache, [1, 2], { maxNewTokens: 4 });
    await first.next();
    cache.reset(0);
    model.prefill([5, 6], cache);
    await expect(first.next()).rejects.toThrow('generate: another call wrote to cache row 0 between two generated tokens (it holds 2 tokens, as before, but not these)');
  });

  it('an onPrefill that resets the row and prefills as many tokens is a ReentrancyError, and the row goes back', async () => {
    const cache = await cacheFor(model);
    const refill = (done: number) => {
      if (done !== 2) return;
      cache.reset(0);
      model.prefill([9, 9], cache);
    };
    expect(() => model.prefill([1, 2, 3, 4], cache, { chunkTokens: 2, onProgress: refill })).toThrow(/onProgress changed cache row 0 from 2 to 2 tokens \(another call wrote to it\)/);
    expect(cache.length(0)).toBe(0);
    await expect(drain(generate(model, cache, [1, 2, 3, 4], { chunkTokens: 2, onPrefill: refill }))).rejects.toThrow(ReentrancyError);
    expect(cache.length(0)).toBe(0);
  });
});

describe('generate: streamed text', () => {
  // Every id stands for the lead byte of a 3-byte character, so no character is ever finished.
  class LeadBytes extends ByteTokenizer {
    override tokenBytes(): Uint8Array {
      return Uint8Array.of(0xe2);
    }
  }
  const texts = (got: GeneratedToken[]) => got.map((t) => t.text).join('');

  it('the texts joined are tokenizer.decode(ids): what the last token leaves unfinished is U+FFFD, not dropped (maxNewTokens)', async () => {
    const tokenizer = new LeadBytes();
    const got = await drain(generate(model, await cacheFor(model), [1, 2, 3], { maxNewTokens: 3, stopTokens: [], tokenizer }));
    expect(got.length).toBe(3);
    expect(texts(got)).toBe(tokenizer.decode(got.map((t) => t.id)));
    expect(texts(got)).toBe('\ufffd'.repeat(3));
  });

  it('... and at a stop token', async () => {
    const tokenizer = new LeadBytes();
    const [firstToken] = await drain(generate(model, await cacheFor(model), [1, 2, 3], { maxNewTokens: 1 }));
    const got = await drain(generate(model, await cacheFor(model), [1, 2, 3], { maxNewTokens: 5, stopTokens: [firstToken!.id], tokenizer }));
    expect(got.map((t) => [t.stop, t.text])).toEqual([[true, '\ufffd']]);
  });

  it('bytes of characters split over tokens at random: the texts joined are decode(ids), whichever byte the generation ends on', async () => {
    const ids = [0xe2, 0x82, 0xac]; // €
    const tokenizer = new (class extends ByteTokenizer {
      override tokenBytes(id: number): Uint8Array {
        return Uint8Array.of(ids[id % 3]!);
      }
    })();
    const got = await drain(generate(model, await cacheFor(model), [1, 2, 3], { maxNewTokens: 6, stopTokens: [], tokenizer }));
    expect(texts(got)).toBe(tokenizer.decode(got.map((t) => t.id)));
  });
});

describe('generate: what cannot work is refused before the prompt runs', () => {
  it.each([null, undefined, {}, 'model', { config: {} }])('model %o is a ConfigError naming the call, not a TypeError', async (bad) => {
    const cache = await cacheFor(model);
    await expect(drain(generate(bad as never, cache, [1, 2]))).rejects.toThrow(ConfigError);
    await expect(drain(generate(bad as never, cache, [1, 2]))).rejects.toThrow(/^generate: model must be a LlamaModel, got /);
  });

  it("the bundled model's stop token <eos> (257) with a ByteTokenizer that lacks it: a ConfigError before the prompt, not a TokenizerError at the end", async () => {
    const bundled = await LlamaModel.load(BUNDLED, { threads: 1 });
    const cache = await cacheFor(bundled);
    const prompt = [256, ...new ByteTokenizer().encode('key: 7. key:')];
    const run = (tokenizer: ByteTokenizer, stopTokens?: number[]) => drain(generate(bundled, cache, prompt, { maxNewTokens: 2, tokenizer, ...(stopTokens ? { stopTokens } : {}) }));
    await expect(run(new ByteTokenizer())).rejects.toThrow("generate: stop token 257 is outside the tokenizer's vocabulary [0, 256)");
    await expect(run(new ByteTokenizer())).rejects.toThrow(ConfigError);
    expect(cache.length(0)).toBe(0);
    // With the model's specials, or stop tokens the tokenizer can write, it runs.
    expect((await run(new ByteTokenizer({ specials: ['<bos>', '<eos>', '<pad>', '<sep>'] }))).length).toBeGreaterThan(0);
    cache.reset(0);
    expect((await run(new ByteTokenizer(), [10])).length).toBeGreaterThan(0);
    bundled.dispose();
  });
});

const BPE = new BpeTokenizer({ model: { type: 'BPE', vocab: Object.fromEntries(BYTE_CHAR.map((c, b) => [c, b])), merges: [] }, pre_tokenizer: { type: 'ByteLevel' } });

describe.each([['ByteTokenizer', new ByteTokenizer()], ['BpeTokenizer', BPE]] as const)('%s.decode: every id an integer, else a TokenizerError naming its place', (name, tokenizer) => {
  it('a hole in a sparse list is not skipped', () => {
    // eslint-disable-next-line no-sparse-arrays
    expect(() => tokenizer.decode([65, , 66] as number[])).toThrow(`${name}.decode: ids[1] is a hole, not a token id`);
  });

  it.each([['"5"', '5'], ['"length"', 'length'], ['65n', 65n], ['Symbol(x)', Symbol('x')]])('%s (after ids 5 and 65 were decoded)', (shown, bad) => {
    expect(tokenizer.decode([5, 65])).toBe('\u0005A');
    expect(() => tokenizer.decode([65, bad as never])).toThrow(TokenizerError);
    expect(() => tokenizer.decode([65, bad as never])).toThrow(`${name}.decode: ids[1] is ${shown}, not a token id`);
    expect(() => tokenizer.tokenBytes(bad as never)).toThrow(TokenizerError);
    expect(() => tokenizer.streamDecoder().push(bad as never)).toThrow(TokenizerError);
  });

  it('a character cut between tokens, then more text: U+FFFD for the cut one, the rest as it was', () => {
    expect(tokenizer.decode([0xe2, 0x82, 0x41, 0xe2, 0x82, 0xac])).toBe('\ufffdA€');
    expect(tokenizer.decode([0xe2, 0x82])).toBe('\ufffd');
  });
});

describe('loading: what is not a path, and weights the config does not read', () => {
  it.each([undefined, null, 42, ['models/skv-small']])('loadCheckpoint(%o) and LlamaModel.load are a CheckpointError (io), not a TypeError', async (dir) => {
    await expect(loadCheckpoint(dir as never)).rejects.toThrow(CheckpointError);
    await expect(loadCheckpoint(dir as never)).rejects.toMatchObject({ problem: 'io', message: expect.stringMatching(/^loadCheckpoint: dir must be the path of a checkpoint folder, got /) });
    await expect(LlamaModel.load(dir as never, { matmul: 'js' })).rejects.toThrow(CheckpointError);
  });

  /** `files` with config.json rewritten from `config`. */
  const withConfig = (files: Map<string, Uint8Array>, config: LlamaConfig) => new Map([...files, ['config.json', new TextEncoder().encode(JSON.stringify(hfConfigJson(config)))]]);

  it('the bundled model with num_hidden_layers 3 of its 6: a CheckpointError naming a tensor of layer 3, not a 3-layer model', () => {
    const config = JSON.parse(readFileSync(`${BUNDLED}config.json`, 'utf8'));
    const read = (file: string) => {
      if (file === 'config.json') return new TextEncoder().encode(JSON.stringify({ ...config, num_hidden_layers: 3 }));
      try {
        return readFileSync(BUNDLED + file);
      } catch {
        return undefined;
      }
    };
    expect(() => readCheckpoint(read)).toThrow(CheckpointError);
    expect(() => readCheckpoint(read)).toThrow(/holds tensor 'model\.layers\.3\.[\w.]+', which config\.json \(num_hidden_layers 3, attention_bias false, mlp_bias false\) does not read/);
  });

  it('biases in the files where the config says attention_bias or mlp_bias false: a CheckpointError naming one', () => {
    const { files } = memoryCheckpoint(MHA, { seed: 1 });
    const read = (config: LlamaConfig) => () => readCheckpoint((f) => withConfig(files, config).get(f));
    expect(read({ ...MHA, attentionBias: false })).toThrow(/holds tensor 'model\.layers\.0\.self_attn\.q_proj\.bias'/);
    expect(read({ ...MHA, mlpBias: false })).toThrow(/holds tensor 'model\.layers\.0\.mlp\.gate_proj\.bias'.*mlp_bias false/);
    expect(read({ ...MHA, attentionBias: false })).toThrow(CheckpointError);
  });

  it('what older exports carry beside the weights still loads: rotary_emb.inv_freq, a tied model\'s lm_head.weight', () => {
    const tensors = randomWeights(MHA, { seed: 1 });
    tensors.set('model.layers.0.self_attn.rotary_emb.inv_freq', { data: new Float32Array(MHA.headDim / 2), shape: [MHA.headDim / 2], dtype: 'f32' });
    tensors.set('lm_head.weight', tensors.get('model.embed_tokens.weight')!);
    const files = checkpointFiles(MHA, tensors, { shards: 2 });
    expect(readCheckpoint((f) => files.get(f)).config.layers).toBe(MHA.layers);
  });
});
