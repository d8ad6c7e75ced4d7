import { beforeAll, expect, it } from 'vitest';
import type { Cache } from '../createCache.js';
import { fromNumbers } from '../dtype.js';
import {
  CapacityError, DTypeError, LayerIndexError, NonFiniteError, SequenceIndexError, ShadowKVError, ShapeError, type ErrorCode,
} from '../errors/index.js';
import type { Tensor } from '../tensor.js';
import type { TestEnv } from './envs.js';
import { randn, rng } from './random.js';
import { makeCache, type PolicyUnderTest } from './subject.js';

// Bad input of every kind the SDK types: each call must throw its typed error and leave the cache
// byte for byte as it was (its snapshot), whatever the policy.
const rand = rng(99);
const t = (shape: number[], dtype: 'f32' | 'bf16' = 'f32'): Tensor => {
  const data = randn(shape.reduce((a, b) => a * b, 1), rand);
  return { data: fromNumbers(data, dtype), shape, dtype } as Tensor;
};
const poison = (x: Tensor, i: number, v: number): Tensor => {
  const data = Float32Array.from(x.data as Float32Array);
  data[i] = v;
  return { ...x, data };
};

const decodeInput = () => ({ query: t([2, 4, 1, 16]), key: t([2, 2, 1, 16]), value: t([2, 2, 1, 16]) });
const prefillInput = (S = 20) => ({ keys: t([1, 2, S, 16]), values: t([1, 2, S, 16]) });

/** [name, error class, code, the call] — each call is rejected and must leave the cache as it was. */
export const BAD_INPUT_CASES: [string, new (...a: never[]) => ShadowKVError, ErrorCode, (c: Cache) => unknown][] = [
  ['layer index past the last layer', LayerIndexError, 'SKV_LAYER_INDEX', (c) => c.decode(2, decodeInput())],
  ['negative layer index', LayerIndexError, 'SKV_LAYER_INDEX', (c) => c.prefill(-1, prefillInput())],
  ['fractional layer index', LayerIndexError, 'SKV_LAYER_INDEX', (c) => c.decode(0.5, decodeInput())],
  ['keys of rank 3', ShapeError, 'SKV_SHAPE', (c) => c.prefill(0, { keys: t([2, 20, 16]), values: t([2, 20, 16]) })],
  ['keys with the wrong kv head count', ShapeError, 'SKV_SHAPE', (c) => c.prefill(0, { keys: t([1, 3, 20, 16]), values: t([1, 3, 20, 16]) })],
  ['keys with the wrong head dim', ShapeError, 'SKV_SHAPE', (c) => c.prefill(0, { keys: t([1, 2, 20, 8]), values: t([1, 2, 20, 8]) })],
  ['values shaped unlike keys', ShapeError, 'SKV_SHAPE', (c) => c.prefill(0, { keys: t([1, 2, 20, 16]), values: t([1, 2, 19, 16]) })],
  ['data length unlike the shape', ShapeError, 'SKV_SHAPE', (c) => c.prefill(0, { keys: { data: new Float32Array(10), shape: [1, 2, 20, 16], dtype: 'f32' }, values: t([1, 2, 20, 16]) })],
  ['zero tokens', ShapeError, 'SKV_SHAPE', (c) => c.prefill(0, { keys: { data: new Float32Array(0), shape: [1, 2, 0, 16], dtype: 'f32' }, values: { data: new Float32Array(0), shape: [1, 2, 0, 16], dtype: 'f32' } })],
  ['queries with the wrong head count', ShapeError, 'SKV_SHAPE', (c) => c.prefill(0, { ...prefillInput(), queries: t([1, 2, 20, 16]) })],
  ['queries for another token count', ShapeError, 'SKV_SHAPE', (c) => c.prefill(0, { ...prefillInput(), queries: t([1, 4, 21, 16]) })],
  ['decode with two tokens', ShapeError, 'SKV_SHAPE', (c) => c.decode(0, { query: t([2, 4, 2, 16]), key: t([2, 2, 2, 16]), value: t([2, 2, 2, 16]) })],
  ['decode batch unlike the cache', ShapeError, 'SKV_SHAPE', (c) => c.decode(0, { query: t([1, 4, 1, 16]), key: t([1, 2, 1, 16]), value: t([1, 2, 1, 16]) })],
  ['missing decode value', ShapeError, 'SKV_SHAPE', (c) => c.decode(0, { query: t([2, 4, 1, 16]), key: t([2, 2, 1, 16]) } as never)],
  ['unknown dtype', DTypeError, 'SKV_DTYPE', (c) => c.prefill(0, { keys: { ...t([1, 2, 20, 16]), dtype: 'f8' as never }, values: t([1, 2, 20, 16]) })],
  ['Float32Array data labelled bf16', DTypeError, 'SKV_DTYPE', (c) => c.prefill(0, { keys: { ...t([1, 2, 20, 16]), dtype: 'bf16' }, values: t([1, 2, 20, 16]) })],
  ['keys and values of different dtypes', DTypeError, 'SKV_DTYPE', (c) => c.prefill(0, { keys: t([1, 2, 20, 16]), values: t([1, 2, 20, 16], 'bf16') })],
  ['NaN in keys', NonFiniteError, 'SKV_NON_FINITE', (c) => c.prefill(0, { keys: poison(t([1, 2, 20, 16]), 77, NaN), values: t([1, 2, 20, 16]) })],
  ['Infinity in values', NonFiniteError, 'SKV_NON_FINITE', (c) => c.prefill(0, { keys: t([1, 2, 20, 16]), values: poison(t([1, 2, 20, 16]), 3, Infinity) })],
  ['NaN in a decode query', NonFiniteError, 'SKV_NON_FINITE', (c) => c.decode(1, { ...decodeInput(), query: poison(t([2, 4, 1, 16]), 100, NaN) })],
  ['bf16 NaN bits in a decode key', NonFiniteError, 'SKV_NON_FINITE', (c) => c.decode(0, { query: t([2, 4, 1, 16], 'bf16'), key: { data: new Uint16Array(64).fill(0x7fc0), shape: [2, 2, 1, 16], dtype: 'bf16' }, value: t([2, 2, 1, 16], 'bf16') })],
  ['sequence index out of range', SequenceIndexError, 'SKV_SEQUENCE_INDEX', (c) => c.prefill(0, { ...prefillInput(), sequences: [2] })],
  ['the same sequence twice', SequenceIndexError, 'SKV_SEQUENCE_INDEX', (c) => c.prefill(0, { keys: t([2, 2, 20, 16]), values: t([2, 2, 20, 16]), sequences: [1, 1] })],
  ['fewer sequences than input rows', ShapeError, 'SKV_SHAPE', (c) => c.prefill(0, { keys: t([2, 2, 20, 16]), values: t([2, 2, 20, 16]), sequences: [0] })],
  ['length() of a row past the batch', SequenceIndexError, 'SKV_SEQUENCE_INDEX', (c) => c.length(5)],
  ['reset() of a negative row', SequenceIndexError, 'SKV_SEQUENCE_INDEX', (c) => c.reset(-1)],
  ['prefill past maxTokens', CapacityError, 'SKV_CAPACITY', (c) => c.prefill(0, prefillInput(1))],
  ['decode past maxTokens on one row', CapacityError, 'SKV_CAPACITY', (c) => c.decode(1, decodeInput())],
];

/**
 * Each of `BAD_INPUT_CASES` on a cache of the policy (tight options, 2 rows, maxTokens 101: row 0
 * full, row 1 short, both decoded once, so that every part of its state is populated).
 */
export function badInputSuite(p: PolicyUnderTest, env: TestEnv): void {
  let cache: Cache;
  beforeAll(async () => {
    cache = await makeCache(p, 'tight', env, 2, 101);
    for (const l of [0, 1]) {
      cache.prefill(l, { keys: t([1, 2, 100, 16]), values: t([1, 2, 100, 16]), sequences: [0] });
      cache.prefill(l, { keys: t([1, 2, 30, 16]), values: t([1, 2, 30, 16]), sequences: [1] });
      cache.decode(l, decodeInput());
    }
  });

  it.each(BAD_INPUT_CASES)('%s: typed error, cache unchanged', (_, ErrorClass, code, call) => {
    const before = cache.save();
    const lengthBefore = [cache.length(0), cache.length(1)];
    let thrown: unknown;
    try {
      call(cache);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(ErrorClass);
    expect((thrown as ShadowKVError).code).toBe(code);
    expect((thrown as Error).message).toMatch(/\(layer|\(\)|prefill|decode/);
    expect(Buffer.from(cache.save()).equals(Buffer.from(before))).toBe(true);
    expect([cache.length(0), cache.length(1)]).toEqual(lengthBefore);
  });

  it('messages name the call, what came in, and what was expected', () => {
    expect(() => cache.decode(0, { query: t([2, 4, 1, 8]), key: t([2, 2, 1, 16]), value: t([2, 2, 1, 16]) })).toThrow(
      'decode(layer 0): query is [2, 4, 1, 8], but the cache holds 2 rows and spec has 4 query heads of dim 16, so expected [2, 4, 1, 16]',
    );
  });
}
