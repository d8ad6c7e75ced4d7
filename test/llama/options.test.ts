// Every options object of packages/llama: a misspelt key is a ConfigError naming it (never ignored,
// leaving a default in force), and a value of the wrong kind a ConfigError naming the option (never
// a TypeError from deep inside, never replaced by a default).
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, FullKVCache, SequenceIndexError } from '../../packages/shadowkv/src/backend.js';
import { ByteTokenizer, checkpointFiles, fitCacheOptions, generate, LlamaModel, randomWeights, Sampler } from '../../packages/llama/src/index.js';
import { GQA, memoryCheckpoint } from './fixtures.js';

let model: LlamaModel;
beforeAll(async () => {
  model = await LlamaModel.create(memoryCheckpoint(GQA, { seed: 2 }).checkpoint, { matmul: 'js' });
});

const cache = () => new FullKVCache({ spec: model.spec, dtype: 'f32', maxTokens: 64 });
const { checkpoint } = memoryCheckpoint(GQA, { seed: 2 });

/** Drains `generate` (options as given, unchecked by the compiler). */
async function generated(options: object): Promise<number[]> {
  const ids = [];
  for await (const t of generate(model, cache(), [1, 2, 3], { maxNewTokens: 2, ...options } as never)) ids.push(t.id);
  return ids;
}

describe('a misspelt option is a ConfigError naming it', () => {
  it.each([
    ['LlamaModel.create', () => LlamaModel.create(checkpoint, { matmull: 'js' } as never), /unknown option 'matmull'/],
    ['generate', () => generated({ maxNewToken: 1 }), /generate options: unknown option 'maxNewToken'/],
    ['generate (a sampling option)', () => generated({ temprature: 1 }), /unknown option 'temprature'/],
  ])('%s', async (_, call, message) => {
    await expect(call()).rejects.toThrow(ConfigError);
    await expect(call()).rejects.toThrow(message);
  });

  it.each([
    ['forward', () => model.forward([1], cache(), { sequense: 0 } as never), /forward options: unknown option 'sequense'/],
    ['prefill', () => model.prefill([1], cache(), { chunkToken: 4 } as never), /prefill options: unknown option 'chunkToken'/],
    ['Sampler', () => new Sampler({ topk: 2 } as never), /unknown option 'topk'/],
    ['fitCacheOptions', () => fitCacheOptions(model.spec, { promptTokens: 10, budgetFracton: 0.1 } as never), /unknown option 'budgetFracton'/],
    ['ByteTokenizer', () => new ByteTokenizer({ special: [] } as never), /unknown option 'special'/],
    ['checkpointFiles', () => checkpointFiles(GQA, randomWeights(GQA), { shard: 2 } as never), /unknown option 'shard'/],
    ['randomWeights', () => randomWeights(GQA, { sead: 2 } as never), /unknown option 'sead'/],
  ])('%s', (_, call, message) => {
    expect(call).toThrow(ConfigError);
    expect(call).toThrow(message);
  });
});

describe('an option of the wrong kind is a ConfigError naming it', () => {
  it.each([
    ["matmul 'gpu'", { matmul: 'gpu' }, /matmul must be 'wasm', 'device', 'js' or a Matmul/],
    ['matmul {}', { matmul: {} }, /matmul must be/],
    ['matmul null', { matmul: null }, /matmul must be/],
    ['threads 0', { matmul: 'js', threads: 0 }, /threads must be an integer in \[1, 256\]/],
    ['backend 5', { matmul: 'js', backend: 5 }, /backend must be a backend name/],
    ['no options object', null, /must be an object/],
  ])('LlamaModel.create: %s', async (_, options, message) => {
    await expect(LlamaModel.create(checkpoint, options as never)).rejects.toThrow(ConfigError);
    await expect(LlamaModel.create(checkpoint, options as never)).rejects.toThrow(message);
  });

  it.each([
    ['chunkTokens 0', { chunkTokens: 0 }, /chunkTokens must be a positive integer, got 0/],
    ['chunkTokens NaN', { chunkTokens: NaN }, /chunkTokens must be a positive integer, got NaN/],
    ['stopTokens 5', { stopTokens: 5 }, /stopTokens must be a list of token ids, got 5/],
    ["stopTokens ['x']", { stopTokens: ['x'] }, /stopTokens\[0\] is "x", not a token id in \[0, 61\)/],
    ['stopTokens [-1]', { stopTokens: [-1] }, /stopTokens\[0\] is -1/],
    ['stopTokens [2, 1.5]', { stopTokens: [2, 1.5] }, /stopTokens\[1\] is 1.5/],
    ['stopTokens [61] (past the vocabulary)', { stopTokens: [61] }, /stopTokens\[0\] is 61/],
    ['maxNewTokens -1', { maxNewTokens: -1 }, /maxNewTokens must be an integer >= 0/],
    ['a tokenizer that is not one', { tokenizer: {} }, /tokenizer must be a Tokenizer/],
    ['a signal that is not one', { signal: { aborted: false } }, /signal must be an AbortSignal/],
    ['onPrefill 5', { onPrefill: 5 }, /generate: onPrefill must be a function/],
    ['a signal that is not one, aborted', { signal: { aborted: true } }, /signal must be an AbortSignal/],
    ['chunkTokens 0 with an aborted signal', { chunkTokens: 0, signal: AbortSignal.abort() }, /chunkTokens must be a positive integer/],
    ['topP "0.5"', { temperature: 1, topP: '0.5' }, /topP must be a number in \(0, 1\]/],
  ])('generate: %s', async (_, options, message) => {
    await expect(generated(options)).rejects.toThrow(ConfigError);
    await expect(generated(options)).rejects.toThrow(message);
  });

  it.each([
    ["forward: allLogits 'yes'", () => model.forward([1], cache(), { allLogits: 'yes' } as never), /allLogits must be true or false/],
    ['prefill: onProgress 5', () => model.prefill([1], cache(), { onProgress: 5 } as never), /onProgress must be a function/],
    ['prefill: signal {}', () => model.prefill([1], cache(), { signal: {} } as never), /signal must be an AbortSignal/],
    ['checkpointFiles: shards 0', () => checkpointFiles(GQA, randomWeights(GQA), { shards: 0 }), /shards must be an integer in \[1, /],
    ["randomWeights: dtype 'f64'", () => randomWeights(GQA, { dtype: 'f64' } as never), /dtype must be 'f32', 'f16' or 'bf16'/],
  ])('%s', (_, call, message) => {
    expect(call).toThrow(ConfigError);
    expect(call).toThrow(message);
  });
});

describe('a sequence option that is not an integer is a ConfigError naming it, the value quoted, the cache unchanged', () => {
  // A string or fraction used to reach the cache as a row index: a SequenceIndexError about length().
  const values: [string, unknown, string][] = [["'0'", '0', '"0"'], ['1.5', 1.5, '1.5'], ['NaN', NaN, 'NaN'], ['null', null, 'null'], ['[0]', [0], '[0]'], ['true', true, 'true']];
  const calls: [string, (c: FullKVCache, sequence: unknown) => Promise<unknown>][] = [
    ['LlamaModel.forward', async (c, sequence) => model.forward([1, 2], c, { sequence } as never)],
    ['LlamaModel.prefill', async (c, sequence) => model.prefill([1, 2], c, { sequence } as never)],
    ['generate', async (c, sequence) => {
      for await (const _ of generate(model, c, [1, 2], { maxNewTokens: 2, sequence } as never));
    }],
  ];
  it.each(calls.flatMap(([call, run]) => values.map(([label, value, shown]) => [call, label, run, value, shown] as const)))('%s: sequence %s', async (call, _, run, value, shown) => {
    const c = new FullKVCache({ spec: model.spec, dtype: 'f32', maxTokens: 64, batch: 2 });
    model.prefill([3, 4, 5], c, { sequence: 1 });
    const before = Buffer.from(c.save());
    const err = await run(c, value).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe(`${call}: sequence must be an integer (a cache row), got ${shown}`);
    expect(Buffer.from(c.save()).equals(before)).toBe(true);
  });

  it.each(calls.flatMap(([call, run]) => [-1, 2, 7].map((row) => [call, row, run] as const)))('%s: sequence %d, an integer outside the rows, is a SequenceIndexError of that call', async (call, row, run) => {
    const c = new FullKVCache({ spec: model.spec, dtype: 'f32', maxTokens: 64, batch: 2 });
    model.prefill([3, 4, 5], c, { sequence: 1 });
    const before = Buffer.from(c.save());
    const err = await run(c, row).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(SequenceIndexError);
    expect((err as Error).message).toBe(`${call}: sequence ${row} is outside the cache's rows [0, 2)`);
    expect(Buffer.from(c.save()).equals(before)).toBe(true);
  });

  it("LlamaModel.create: threads given as a string is quoted (it is not the valid 4)", async () => {
    await expect(LlamaModel.create(checkpoint, { matmul: 'js', threads: '4' } as never)).rejects.toThrow(/threads must be an integer in \[1, 256\], got "4"/);
  });
});
