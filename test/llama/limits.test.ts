// Limits a caller can cross without noticing: the model's positions (RoPE past max_position_embeddings
// is a context it never trained on), the sampler's 32-bit seed, and who owns the Matmul a model runs on.
import { describe, expect, it } from 'vitest';
import { CapacityError, ConfigError, FullKVCache } from '../../packages/shadowkv/src/backend.js';
import { generate, JsMatmul, LlamaModel, randomWeights, Rng, Sampler, WasmMatmul, type GeneratedToken, type Matmul } from '../../packages/llama/src/index.js';
import { GQA, memoryCheckpoint } from './fixtures.js';

const SMALL = { ...GQA, maxPositions: 12 }; // a row holds 12 positions; the cache has room for more
const drain = async (tokens: AsyncIterable<GeneratedToken>) => {
  const ids: number[] = [];
  for await (const t of tokens) ids.push(t.id);
  return ids;
};

describe("the model's maxPositions: a call that would pass it is a CapacityError, the row as it was", async () => {
  const model = await LlamaModel.create(memoryCheckpoint(SMALL, { seed: 4 }).checkpoint, { matmul: 'js' });
  const filled = (held: number) => {
    const cache = new FullKVCache({ spec: model.spec, dtype: 'f32', maxTokens: 64, batch: 2 });
    if (held) model.prefill(Array.from({ length: held }, (_, i) => i + 1), cache, { sequence: 1 });
    return cache;
  };

  it.each([
    ['LlamaModel.forward', 10, (c: FullKVCache) => model.forward([1, 2, 3], c, { sequence: 1 }), 'cache row 1 holds 10 tokens and 3 tokens would take it to 13 positions'],
    ['LlamaModel.forward (a decode step)', 12, (c: FullKVCache) => model.forward([1], c, { sequence: 1 }), 'cache row 1 holds 12 tokens and 1 tokens would take it to 13 positions'],
    ['LlamaModel.prefill', 0, (c: FullKVCache) => model.prefill(Array.from({ length: 13 }, () => 5), c, { sequence: 1, chunkTokens: 4 }), 'cache row 1 holds 0 tokens and 13 tokens would take it to 13 positions'],
  ] as const)('%s', (call, held, run, detail) => {
    const cache = filled(held);
    const before = Buffer.from(cache.save());
    expect(() => run(cache)).toThrow(CapacityError);
    expect(() => run(cache)).toThrow(`${call.split(' ')[0]}: ${detail}, past the model's maxPositions 12`);
    expect(Buffer.from(cache.save()).equals(before)).toBe(true);
  });

  it('up to the limit runs: 12 positions fill the row', () => {
    const cache = filled(0);
    model.prefill(Array.from({ length: 11 }, () => 3), cache);
    expect(() => model.forward([4], cache)).not.toThrow();
    expect(cache.length(0)).toBe(12);
  });

  it('generate refuses up front a prompt and maxNewTokens that could pass it (the last token is not stored), before the prompt runs', async () => {
    const cache = filled(4);
    const before = Buffer.from(cache.save());
    // 4 held + 5 prompt + 4 of 5 new = 13 > 12; a stop token might end it sooner, but it might not.
    const err = await drain(generate(model, cache, [1, 2, 3, 4, 5], { sequence: 1, maxNewTokens: 5 })).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(CapacityError);
    expect((err as Error).message).toBe("generate: cache row 1 holds 4 tokens and the prompt's 5 tokens and maxNewTokens 5 (all but the last generated token are stored) would take it to 13 positions, past the model's maxPositions 12 (max_position_embeddings: RoPE beyond it is a context the model never saw)");
    expect(Buffer.from(cache.save()).equals(before)).toBe(true);
    // One token fewer fits exactly: every token comes, and the row ends at the limit.
    expect(await drain(generate(model, cache, [1, 2, 3, 4, 5], { sequence: 1, maxNewTokens: 4 }))).toHaveLength(4);
    expect(cache.length(1)).toBe(12);
  });

  it.each([undefined, 0, 2.5, '12'])('create: a config whose maxPositions is %o is a ConfigError (no call could check it)', async (maxPositions) => {
    const { checkpoint } = memoryCheckpoint(GQA, { seed: 4 });
    const bad = { ...checkpoint, config: { ...checkpoint.config, maxPositions } };
    await expect(LlamaModel.create(bad as never, { matmul: 'js' })).rejects.toThrow(/^LlamaModel\.create: checkpoint\.config\.maxPositions must be a positive integer/);
  });
});

describe('seeds: an integer in [0, 2^32), else a ConfigError naming the call; no two seeds share a stream', () => {
  const draws = (rng: Rng) => Array.from({ length: 8 }, () => rng.next());

  it.each([2 ** 32, 2 ** 32 + 1, -1, 1.5, 2 ** 53, '7', NaN])('seed %o is refused by Rng, Sampler, generate and randomWeights', async (seed) => {
    expect(() => new Rng(seed as never)).toThrow(new ConfigError(`Rng: seed must be an integer in [0, 2^32), got ${typeof seed === 'string' ? `"${seed}"` : String(seed)}`));
    expect(() => new Sampler({ temperature: 1, seed } as never)).toThrow(/^Sampler: seed must be an integer in \[0, 2\^32\)/);
    expect(() => randomWeights(GQA, { seed } as never)).toThrow(/^randomWeights: seed must be an integer in \[0, 2\^32\)/);
    const model = await LlamaModel.create(memoryCheckpoint(GQA, { seed: 4 }).checkpoint, { matmul: 'js' });
    const cache = new FullKVCache({ spec: model.spec, dtype: 'f32', maxTokens: 16 });
    await expect(drain(generate(model, cache, [1, 2], { temperature: 1, seed } as never))).rejects.toThrow(/^generate: seed must be an integer in \[0, 2\^32\)/);
    expect(cache.length(0)).toBe(0);
  });

  it('the ends of the range are streams of their own (2^32 + 1 used to be seed 1, -1 seed 2^32 - 1)', () => {
    expect(draws(new Rng(0))).not.toEqual(draws(new Rng(2 ** 32 - 1)));
    expect(draws(new Rng(1))).not.toEqual(draws(new Rng(2)));
  });

  it.each([
    [{ temperature: -1 }, 'temperature must be a finite number >= 0, got -1'],
    [{ topK: 1.5 }, 'topK must be an integer >= 0, got 1.5'],
    [{ topP: 0 }, 'topP must be a number in (0, 1], got 0'],
  ])('sampling option %j: the error names the call it came through', async (options, message) => {
    expect(() => new Sampler(options)).toThrow(`Sampler: ${message}`);
    const model = await LlamaModel.create(memoryCheckpoint(GQA, { seed: 4 }).checkpoint, { matmul: 'js' });
    const cache = new FullKVCache({ spec: model.spec, dtype: 'f32', maxTokens: 16 });
    await expect(drain(generate(model, cache, [1, 2], options))).rejects.toThrow(new ConfigError(`generate: ${message}`));
    expect(cache.length(0)).toBe(0);
  });
});

describe('a Matmul passed to LlamaModel.create stays the caller\'s', () => {
  it.each([['JsMatmul', async () => new JsMatmul()], ['WasmMatmul', () => WasmMatmul.create()]] as const)('%s: model.dispose() leaves it working; the caller disposes it', async (_, make) => {
    const matmul: Matmul = await make();
    const disposed: string[] = [];
    const spy: Matmul = {
      name: matmul.name, prepare: (w) => matmul.prepare(w), linear: (...args) => matmul.linear(...args),
      dispose: () => (disposed.push('matmul'), matmul.dispose()), [Symbol.dispose]: () => spy.dispose(),
    };
    const { checkpoint } = memoryCheckpoint(GQA, { seed: 4 });
    const model = await LlamaModel.create(checkpoint, { matmul: spy });
    model.dispose();
    expect(disposed).toEqual([]);
    // Another model on the same matmul still runs: its weights were not freed under it.
    const other = await LlamaModel.create(checkpoint, { matmul: spy });
    const cache = new FullKVCache({ spec: other.spec, dtype: 'f32', maxTokens: 16 });
    expect(other.forward([1, 2], cache)).toHaveLength(GQA.vocabSize);
    other.dispose();
    spy.dispose();
    expect(disposed).toEqual(['matmul']);
  });

  it("one the model made by name is freed with it: 'wasm' after dispose is a DisposedError of its matmul", async () => {
    const model = await LlamaModel.create(memoryCheckpoint(GQA, { seed: 4 }).checkpoint, { matmul: 'wasm', threads: 1 });
    const weight = memoryCheckpoint({ ...GQA, layers: 1 }).tensors.get('model.layers.0.mlp.up_proj.weight')!;
    model.dispose();
    expect(() => model.matmul.prepare(weight)).toThrow('WasmMatmul.prepare: the matmul was disposed');
  });
});
