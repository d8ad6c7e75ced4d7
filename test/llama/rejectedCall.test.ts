// A LlamaModel call that throws leaves its cache row as it was, whatever fails and wherever: ids are
// checked before anything runs, and a failure half-way (a full cache, a non-finite layer, a callback,
// an abort) rolls every layer back. Checked on every registered policy, on an empty row (reset) and
// on a row holding a prefix (crop): the row's lengths and its next logits are those of a cache that
// never saw the call.
import { beforeAll, describe, expect, it } from 'vitest';
import { CapacityError, ConfigError, createCache, listPolicies, NonFiniteError, type KVCachePolicy, type ModelSpec } from '../../packages/shadowkv/src/backend.js';
import { generate, LlamaModel, TokenizerError } from '../../packages/llama/src/index.js';
import { GQA, memoryCheckpoint } from './fixtures.js';
import { tokens } from './reference.js';

const MAX_TOKENS = 24;
const CHUNK = 4;
const V = GQA.vocabSize;

// A window so small that the streaming policy evicts during these prompts: an emptied row is reset,
// which needs no evicted token back. (A prefix it evicts cannot come back: see the last test here.)
const EVICTING: Record<string, Record<string, unknown>> = { streaming: { sinkTokens: 1, windowTokens: 2 } };

let model: LlamaModel, nanKeys: LlamaModel, nanLogits: LlamaModel;
beforeAll(async () => {
  const create = (edit?: (t: Map<string, { data: ArrayLike<number> }>) => void) => LlamaModel.create(memoryCheckpoint(GQA, { seed: 3, ...(edit ? { edit } : {}) }).checkpoint, { matmul: 'js' });
  const poison = (name: string) => (t: Map<string, { data: ArrayLike<number> }>) => void ((t.get(name)!.data as Float32Array)[0] = NaN);
  model = await create();
  nanKeys = await create(poison('model.layers.0.mlp.down_proj.weight')); // layer 0 stores its keys, layer 1's are NaN
  nanLogits = await create(poison('model.norm.weight')); // every layer stores, only the logits are NaN
});

const cacheFor = (policy: string, spec: ModelSpec = model.spec, options: Record<string, unknown> = {}) => createCache({ spec, policy, backend: 'wasm', dtype: 'f32', maxTokens: MAX_TOKENS, options }) as Promise<KVCachePolicy>;
const lengths = (cache: KVCachePolicy) => Array.from({ length: cache.spec.layers }, (_, l) => cache.length(0, l));

/** A call that must be rejected, on a row that holds `held` tokens. */
type Failing = [name: string, call: (cache: KVCachePolicy, held: number) => unknown, error: RegExp | (new (...a: never[]) => Error)];

const abortingInProgress = (cache: KVCachePolicy, prompt: number[]) => {
  const stop = new AbortController();
  return model.prefill(prompt, cache, { chunkTokens: CHUNK, signal: stop.signal, onProgress: () => stop.abort() });
};

const FAILING: Failing[] = [
  ['a bad id in the third chunk (named by its place in the prompt)', (c) => model.prefill([...tokens(9, V, 1), V + 5, 1], c, { chunkTokens: CHUNK }), /token 9 is 66, outside the vocabulary/],
  ['more tokens than maxTokens: the last chunk overflows', (c, held) => model.prefill(tokens(MAX_TOKENS - held + 2, V, 2), c, { chunkTokens: CHUNK }), CapacityError],
  ['a forward whose layer 1 keys are NaN after layer 0 stored its tokens', (c) => nanKeys.forward(tokens(6, V, 3), c), NonFiniteError],
  ['a prefill whose logits are NaN after every layer stored its tokens', (c) => nanLogits.prefill(tokens(9, V, 4), c, { chunkTokens: CHUNK }), NonFiniteError],
  ['an onProgress that throws after the second chunk', (c) => model.prefill(tokens(10, V, 5), c, { chunkTokens: CHUNK, onProgress: (done) => { if (done === 8) throw new RangeError('stop here'); } }), RangeError],
  ['an abort in onProgress', (c) => abortingInProgress(c, tokens(10, V, 6)), /abort/i],
];

describe.each(listPolicies())('a rejected call leaves the cache row as it was [%s]', (policy) => {
  it.each([0, 5])('on a row of %i tokens: every failure, then the same logits as a cache that never saw it', async (held) => {
    const prefix = tokens(held, V, 7);
    const next = [3, 1, 4];
    const options = held ? {} : (EVICTING[policy] ?? {});
    const fresh = await cacheFor(policy, model.spec, options);
    if (held) model.prefill(prefix, fresh);
    const want = model.forward(next, fresh);
    const cache = await cacheFor(policy, model.spec, options);
    if (held) model.prefill(prefix, cache);
    for (const [name, call, error] of FAILING) {
      expect(() => call(cache, held), name).toThrow(error as RegExp);
      expect(lengths(cache), name).toEqual(Array(GQA.layers).fill(held));
    }
    expect(Array.from(model.forward(next, cache))).toEqual(Array.from(want));
    fresh.dispose();
    cache.dispose();
  });
});

describe('generate rolls its prompt back too', () => {
  it('a prompt that overflows the cache: CapacityError, the row empty', async () => {
    const cache = await cacheFor('full');
    const run = async () => {
      for await (const _ of generate(model, cache, tokens(MAX_TOKENS + 3, V, 8), { chunkTokens: CHUNK })) expect.unreachable();
    };
    await expect(run()).rejects.toThrow(CapacityError);
    expect(lengths(cache)).toEqual([0, 0]);
  });

  it.each([0, 1])('non-finite logits at temperature %i: a NonFiniteError, not a token picked from NaN; the row empty', async (temperature) => {
    const cache = await cacheFor('full');
    const run = async () => {
      for await (const _ of generate(nanLogits, cache, tokens(6, V, 12), { temperature })) expect.unreachable();
    };
    await expect(run()).rejects.toThrow(NonFiniteError);
    await expect(run()).rejects.toThrow(/LlamaModel.prefill: logit 0 is NaN; a weight or activation is not finite/);
    expect(lengths(cache)).toEqual([0, 0]);
  });

  it('an already aborted signal: nothing runs, nothing is yielded, no error', async () => {
    const cache = await cacheFor('full');
    let chunks = 0;
    const got = [];
    for await (const t of generate(model, cache, tokens(12, V, 9), { chunkTokens: CHUNK, signal: AbortSignal.abort(), onPrefill: () => chunks++ })) got.push(t);
    expect([got.length, chunks, ...lengths(cache)]).toEqual([0, 0, 0, 0]);
  });

  it('an abort during the prompt: no chunk after it runs, the prompt leaves the cache, nothing is yielded', async () => {
    const cache = await cacheFor('full');
    model.prefill([1, 2], cache);
    const stop = new AbortController();
    let chunks = 0;
    const got = [];
    for await (const t of generate(model, cache, tokens(12, V, 10), { chunkTokens: CHUNK, signal: stop.signal, onPrefill: () => (chunks++, stop.abort()) })) got.push(t);
    expect([got.length, chunks, ...lengths(cache)]).toEqual([0, 1, 2, 2]);
  });
});

describe('a cache made for another spec is refused before anything runs, naming the field', () => {
  const s = GQA;
  const cases: [string, (spec: ModelSpec) => ModelSpec, RegExp][] = [
    ['rope theta', (spec) => ({ ...spec, rope: { ...spec.rope, theta: 500000 } }), /spec\.rope\.theta 500000, but this model's is 10000/],
    ['rope style', (spec) => ({ ...spec, rope: { ...spec.rope, style: 'interleaved' } }), /spec\.rope\.style 'interleaved', but this model's is 'half'/],
    ['no rope scaling', (spec) => ({ ...spec, rope: { theta: spec.rope.theta } }), /spec\.rope\.scaling none, but this model's is \{ factor: 8, lowFreqFactor: 1/],
    ['other rope scaling', (spec) => ({ ...spec, rope: { ...spec.rope, scaling: { ...spec.rope.scaling!, factor: 4 } } }), /spec\.rope\.scaling \{ factor: 4,/],
    ['the attention scale', (spec) => ({ ...spec, scale: 1 }), /spec\.scale 1, but this model's is 0\.35/],
    ['more layers', (spec) => ({ ...spec, layers: s.layers + 3 }), /spec\.layers 5, but this model's is 2/],
    ['fewer layers', (spec) => ({ ...spec, layers: 1 }), /spec\.layers 1/],
    ['kv heads', (spec) => ({ ...spec, kvHeads: 3 }), /spec\.kvHeads 3/],
    ['head size', (spec) => ({ ...spec, headDim: 16 }), /spec\.headDim 16/],
  ];
  it.each(cases)('%s', async (_, edit, message) => {
    const cache = await cacheFor('full', edit(model.spec));
    for (const call of [() => model.forward([1, 2, 3], cache), () => model.prefill([1, 2, 3], cache)]) {
      expect(call).toThrow(ConfigError);
      expect(call).toThrow(message);
    }
    expect(lengths(cache).every((n) => n === 0)).toBe(true);
    cache.dispose();
  });

  it('a cache made from model.spec (or an equal spec spelled out) is taken', async () => {
    const spelled = { ...model.spec, scale: 1 / Math.sqrt(s.headDim), rope: { ...model.spec.rope, style: 'half' as const } };
    const cache = await cacheFor('full', spelled);
    expect(model.forward([1, 2, 3], cache).length).toBe(V);
    cache.dispose();
  });
});

describe('bad ids are a TokenizerError naming their place, before anything runs', () => {
  it.each([[-1], [1.5], [NaN], [V], ['3' as unknown as number]])('id %s', async (bad) => {
    const cache = await cacheFor('full');
    expect(() => model.prefill([1, 2, 3, 4, 5, bad], cache, { chunkTokens: 2 })).toThrow(new RegExp(`LlamaModel.prefill: token 5 is ${typeof bad === 'string' ? '"3"' : String(bad)}`));
    expect(() => model.forward([bad], cache)).toThrow(TokenizerError);
    expect(lengths(cache)).toEqual([0, 0]);
    cache.dispose();
  });
});

it('where the policy evicted the prefix during the call, crop cannot bring it back: the error says so', async () => {
  const cache = await cacheFor('streaming', model.spec, EVICTING.streaming);
  model.prefill([1, 2, 3, 4, 5], cache);
  expect(() => nanKeys.forward(tokens(18, V, 11), cache)).toThrow(/keys.*is NaN.*; the row could not be rolled back \(crop.*\): reset it/);
  cache.reset(0);
  expect(lengths(cache)).toEqual([0, 0]);
  cache.dispose();
});
