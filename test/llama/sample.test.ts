import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError, LLAMA3_8B, NonFiniteError, resolveShadowKVOptions, resolveSpec, ShadowKVCache, ShapeError } from '../../packages/shadowkv/src/backend.js';
import { argmax, fitCacheOptions, Sampler } from '../../packages/llama/src/index.js';

const logits = Float32Array.of(1, 3, 2, 3 - 1e-3, -5);
const draw = (s: Sampler, n: number, l = logits) => Array.from({ length: n }, () => s.next(l));

describe('Sampler', () => {
  it('greedy (temperature 0) is the argmax, ties to the lower id', () => {
    expect(new Sampler().next(logits)).toBe(1);
    expect(argmax(Float32Array.of(0, 2, 2))).toBe(1);
  });

  it('the same seed gives the same draws; another seed other draws', () => {
    const opts = { temperature: 1, seed: 42 };
    expect(draw(new Sampler(opts), 50)).toEqual(draw(new Sampler(opts), 50));
    expect(draw(new Sampler({ ...opts, seed: 43 }), 50)).not.toEqual(draw(new Sampler(opts), 50));
  });

  it('frequencies follow softmax(logits / temperature) (4000 draws, within 0.03)', () => {
    const l = Float32Array.of(0, Math.log(2), Math.log(5));
    for (const temperature of [1, 2]) {
      const counts = [0, 0, 0];
      for (const id of draw(new Sampler({ temperature, seed: 7 }), 4000, l)) counts[id]!++;
      const p = [1, 2, 5].map((w) => w ** (1 / temperature));
      const total = p.reduce((a, b) => a + b);
      counts.forEach((c, i) => expect(Math.abs(c / 4000 - p[i]! / total)).toBeLessThan(0.03));
    }
  });

  it('topK keeps only the k most likely; topP only the nucleus', () => {
    expect(new Set(draw(new Sampler({ temperature: 5, topK: 2, seed: 1 }), 300))).toEqual(new Set([1, 3]));
    expect(new Set(draw(new Sampler({ temperature: 1, topK: 1, seed: 1 }), 50))).toEqual(new Set([1]));
    // p(1) ≈ p(3) ≈ 0.42 at temperature 1: a nucleus of 0.5 needs both, of 0.3 only the first.
    expect(new Set(draw(new Sampler({ temperature: 1, topP: 0.5, seed: 2 }), 300))).toEqual(new Set([1, 3]));
    expect(new Set(draw(new Sampler({ temperature: 1, topP: 0.3, seed: 2 }), 100))).toEqual(new Set([1]));
  });

  it.each([[{ temperature: -1 }], [{ topK: 1.5 }], [{ topP: 0 }], [{ topP: 1.5 }], [{ seed: 0.5 }], [{ topP: '0.5' }], [{ temperature: '1' }], [{ temprature: 1 }], [null]])('rejects %j with a ConfigError', (opts) => {
    expect(() => new Sampler(opts as never)).toThrow(ConfigError);
  });

  const greedy = new Sampler();
  const sampling = new Sampler({ temperature: 1, topK: 2, seed: 3 });
  it.each([
    ['NaN', [1, NaN, 2], NonFiniteError, /logit 1 is NaN/],
    ['+Infinity', [1, Infinity, 2], NonFiniteError, /logit 1 is Infinity/],
    ['only -Infinity', [-Infinity, -Infinity], NonFiniteError, /every logit is -Infinity/],
    ['no logits', [], ShapeError, /non-empty/],
  ] as const)('%s logits are refused, greedy and sampling', (_, values, error, message) => {
    for (const pick of [(l: Float32Array) => greedy.next(l), (l: Float32Array) => sampling.next(l), argmax]) {
      expect(() => pick(Float32Array.from(values))).toThrow(error);
      expect(() => pick(Float32Array.from(values))).toThrow(message);
    }
  });

  it('-Infinity masks a token out: it is never picked while a finite logit is left', () => {
    const masked = Float32Array.of(-Infinity, 0, -Infinity, 0.5);
    expect(new Set(draw(new Sampler({ temperature: 2, seed: 5 }), 200, masked))).toEqual(new Set([1, 3]));
    expect(argmax(Float32Array.of(-Infinity, -3))).toBe(1);
  });
});

describe('fitCacheOptions', () => {
  const narrow = { layers: 4, queryHeads: 8, kvHeads: 2, headDim: 64, rope: { theta: 10000 } };

  it('narrow keys (2 x 64 = 128 wide) get rank 32, a quarter of the width, not 160 capped to 128', () => {
    const fit = fitCacheOptions(narrow, { promptTokens: 16384, maxNewTokens: 256 });
    expect(fit.options.rank).toBe(32);
    expect(fit.notes[0]).toMatch(/rank 32 of key width 128 .*5\/32 would be 20/);
  });

  it("Llama-3-8B's geometry keeps the paper's rank 160", () => {
    expect(fitCacheOptions(LLAMA3_8B, { promptTokens: 131072 - 256 }).options.rank).toBe(160);
  });

  it('the budget is ~1.56 % of the context in whole chunks, 2048 at 128K; the memory is below the dense cache', () => {
    for (const promptTokens of [4096, 16384, 32768, 131072 - 256]) {
      const fit = fitCacheOptions(narrow, { promptTokens });
      const C = fit.options.chunkSize;
      expect(fit.options.budget % C).toBe(0);
      expect(Math.abs(fit.options.budget - Math.max(64, fit.maxTokens / 64))).toBeLessThanOrEqual(C / 2); // the nearest whole chunk
      expect(fit.compressed).toBe(true);
      expect(fit.memory.device).toBeLessThan(fit.memory.dense);
    }
    expect(fitCacheOptions(narrow, { promptTokens: 131072 - 256 }).options.budget).toBe(2048);
    expect(fitCacheOptions(narrow, { promptTokens: 16384, budgetFraction: 0.06 }).options.budget).toBe(1000);
  });

  it("chunks of 8 (the paper's) where the budget holds 64 of them, else chunks of 4, and the notes say why", () => {
    const at = (promptTokens: number, budgetFraction?: number) => fitCacheOptions(narrow, { promptTokens, maxNewTokens: 0, ...(budgetFraction ? { budgetFraction } : {}) });
    expect(at(32768).options.chunkSize).toBe(8); // budget 512 = 64 chunks of 8
    expect(at(32767).options.chunkSize).toBe(4);
    expect(at(4096).options).toMatchObject({ chunkSize: 4, budget: 64 });
    expect(at(16384, 0.06).options.chunkSize).toBe(8);
    expect(at(4096).notes.join('\n')).toMatch(/chunkSize 4: the budget holds fewer than 64 chunks of 8/);
    expect(at(131072).notes.join('\n')).toMatch(/chunkSize 8: the paper's/);
  });

  it("a checkpoint's hint sets the chunk at every budget, and the notes say whose choice it was", () => {
    for (const budgetFraction of [1 / 64, 0.06]) {
      const fit = fitCacheOptions(narrow, { promptTokens: 16384, budgetFraction, hints: { chunkSize: 1 } });
      expect(fit.options.chunkSize).toBe(1);
      expect(fit.notes.join('\n')).toMatch(/chunkSize 1: the checkpoint's hint .*a landmark per token/);
      expect(fit.memory.device).toBeLessThan(fit.memory.dense);
    }
    expect(fitCacheOptions(narrow, { promptTokens: 16384, hints: {} }).options.chunkSize).toBe(4);
    for (const chunkSize of [0, 1.5, -2, NaN]) expect(() => fitCacheOptions(narrow, { promptTokens: 16384, hints: { chunkSize } })).toThrow(ConfigError);
  });

  it('every hinted chunk size that divides into a budget gives options a ShadowKVCache takes as they are', () => {
    fc.assert(
      fc.property(fc.constantFrom(1, 2, 4, 8, 16), fc.integer({ min: 1100, max: 40000 }), fc.constantFrom(1 / 64, 0.03, 0.06), (chunkSize, promptTokens, budgetFraction) => {
        const fit = fitCacheOptions(narrow, { promptTokens, maxNewTokens: 16, budgetFraction, hints: { chunkSize } });
        expect(fit.options.chunkSize).toBe(chunkSize);
        expect(fit.options.budget % chunkSize).toBe(0);
        const cache = new ShadowKVCache({ spec: narrow, maxTokens: fit.maxTokens, ...fit.options });
        expect(cache.options).toMatchObject(fit.options);
        cache.dispose();
      }),
      { numRuns: 25 },
    );
  });

  it('every hinted chunk size the config allows and any prompt a cache row holds give options the cache takes', () => {
    const spec = resolveSpec(narrow);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1024 }), fc.integer({ min: 1, max: 2 ** 31 - 300 }), fc.constantFrom(1 / 64, 0.3, 1), (chunkSize, promptTokens, budgetFraction) => {
        const { options } = fitCacheOptions(narrow, { promptTokens, maxNewTokens: 256, budgetFraction, hints: { chunkSize } });
        expect(resolveShadowKVOptions(options, spec)).toMatchObject(options);
        expect(options.budget).toBeGreaterThanOrEqual(64);
        expect(options.budget).toBeLessThanOrEqual(65536);
      }),
      { numRuns: 300 },
    );
  });

  it('a hint that does not divide 64 rounds the budget floor up to whole chunks; a huge prompt caps the budget at 65536', () => {
    expect(fitCacheOptions(narrow, { promptTokens: 2000, hints: { chunkSize: 3 } }).options).toMatchObject({ budget: 66, maxRecentTokens: 66 });
    expect(fitCacheOptions(narrow, { promptTokens: 2000, hints: { chunkSize: 48 } }).options).toMatchObject({ budget: 96, maxRecentTokens: 96 });
    expect(fitCacheOptions(narrow, { promptTokens: 5_000_000 }).options.budget).toBe(65536);
    expect(fitCacheOptions(narrow, { promptTokens: 5_000_000, hints: { chunkSize: 1000 } }).options).toMatchObject({ budget: 65000, outlierChunks: 65 });
  });

  it.each([
    ['hints null', narrow, { promptTokens: 100, hints: null }, /hints must be an object/],
    ['a misspelt key', narrow, { promptTokens: 100, maxNewToken: 8 }, /unknown option 'maxNewToken'/],
    ['a misspelt hint', narrow, { promptTokens: 100, hints: { chunk_size: 1 } }, /unknown option 'chunk_size'/],
    ['no question', narrow, null, /must be an object/],
    ['spec null', null, { promptTokens: 100 }, /spec must be an object/],
    ['a spec with odd heads', { ...narrow, headDim: 63 }, { promptTokens: 100 }, /headDim must be even/],
    ['more tokens than a row holds', narrow, { promptTokens: 2 ** 31 - 10, maxNewTokens: 20 }, /more than a cache row holds/],
    ['a hint past the chunk limit', narrow, { promptTokens: 100, hints: { chunkSize: 2048 } }, /hints.chunkSize must be an integer in \[1, 1024\]/],
    ['a string budgetFraction', narrow, { promptTokens: 100, budgetFraction: '0.5' }, /budgetFraction/],
  ])('%s is a ConfigError', (_, spec, q, message) => {
    expect(() => fitCacheOptions(spec as never, q as never)).toThrow(ConfigError);
    expect(() => fitCacheOptions(spec as never, q as never)).toThrow(message);
  });

  it('a short prompt stays dense, and the notes say so', () => {
    const fit = fitCacheOptions(narrow, { promptTokens: 500, maxNewTokens: 20 });
    expect(fit.options.budget).toBe(64); // 8 chunks at least
    expect(fit.compressed).toBe(false);
    expect(fit.notes.join('\n')).toMatch(/this 500-token prompt stays dense/);
  });

  it('the options construct a ShadowKVCache as they are', () => {
    const fit = fitCacheOptions(narrow, { promptTokens: 8000, maxNewTokens: 64 });
    const cache = new ShadowKVCache({ spec: narrow, maxTokens: fit.maxTokens, ...fit.options });
    expect(cache.options).toMatchObject(fit.options);
    cache.dispose();
  });
});
