import { beforeAll, describe, expect, it } from 'vitest';
import {
  CapacityError, ConfigError, DisposedError, DTypeError, LayerIndexError, loadCache, NonFiniteError, SequenceIndexError,
  ShadowKVError, ShapeError, SnapshotError, type Cache, type ErrorCode, type Tensor,
} from '../../packages/shadowkv/src/backend.js';
import { forEachEnv } from '../envs.js';
import { makeTensor, randn, rng } from '../helpers/data.js';
import { createCache, SNAPSHOT_VERSION } from '../../packages/shadowkv/src/backend.js';

const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 };
const rand = rng(99);
const t = (shape: number[], dtype: 'f32' | 'bf16' = 'f32') => makeTensor(randn(shape.reduce((a, b) => a * b, 1), rand), shape, dtype).t;
const poison = (x: Tensor, i: number, v: number): Tensor => {
  const data = Float32Array.from(x.data as Float32Array);
  data[i] = v;
  return { ...x, data };
};

const decodeInput = () => ({ query: t([2, 4, 1, 16]), key: t([2, 2, 1, 16]), value: t([2, 2, 1, 16]) });
const prefillInput = (S = 20) => ({ keys: t([1, 2, S, 16]), values: t([1, 2, S, 16]) });

/** [name, error class, code, the call] — each call is rejected and must leave the cache as it was. */
const CASES: [string, new (...a: never[]) => ShadowKVError, ErrorCode, (c: Cache) => unknown][] = [
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

forEachEnv('bad input', (env) => {
  let cache: Cache;
  beforeAll(async () => {
    // Row 0 is compressed and then full (maxTokens 101), row 1 dense; both decoded once, so every
    // part of the state is populated.
    cache = await createCache({ spec, policy: 'shadowkv', batch: 2, dtype: env.dtype, backend: env.backend, maxTokens: 101, options });
    for (const l of [0, 1]) {
      cache.prefill(l, { keys: t([1, 2, 100, 16]), values: t([1, 2, 100, 16]), sequences: [0] });
      cache.prefill(l, { keys: t([1, 2, 30, 16]), values: t([1, 2, 30, 16]), sequences: [1] });
      cache.decode(l, decodeInput());
    }
  });

  it.each(CASES)('%s: typed error, cache unchanged', (_, ErrorClass, code, call) => {
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
}, (e) => e.dtype !== 'f16');

describe('snapshots and lifetimes', () => {
  let bytes: Uint8Array;
  beforeAll(async () => {
    const cache = await createCache({ spec, policy: 'shadowkv', batch: 2, dtype: 'f32', backend: 'wasm', options });
    cache.prefill(0, { keys: t([2, 2, 60, 16]), values: t([2, 2, 60, 16]) });
    bytes = cache.save();
    cache.dispose();
  });

  const corrupt: [string, (b: Uint8Array) => Uint8Array, RegExp][] = [
    ['truncated', (b) => b.slice(0, b.length - 100), /truncated|not a shadowkv/],
    ['one byte altered', (b) => Uint8Array.from(b, (x, i) => (i === b.length - 500 ? x ^ 0x40 : x)), /checksum|not a shadowkv|decode/],
    ['not msgpack at all', () => new TextEncoder().encode('hello, not a snapshot'), /not a shadowkv/],
    ['empty', () => new Uint8Array(0), /not a shadowkv|truncated/],
  ];
  it.each(corrupt)('a %s snapshot is a SnapshotError', async (_, mangle, message) => {
    await expect(loadCache(mangle(bytes))).rejects.toThrow(SnapshotError);
    await expect(loadCache(mangle(bytes))).rejects.toThrow(message);
  });

  it('a snapshot of another format version is a SnapshotError naming both versions', async () => {
    const { Packr } = await import('msgpackr');
    const p = new Packr({ moreTypes: true, useRecords: false });
    const env = p.unpack(bytes) as Record<string, unknown>;
    await expect(loadCache(p.pack({ ...env, version: 99 }))).rejects.toThrow(new RegExp(`version 99 .* version ${SNAPSHOT_VERSION}`));
  });

  it('every call after dispose() is a DisposedError', async () => {
    const cache = await createCache({ spec, policy: 'full', batch: 2, dtype: 'f32', backend: 'wasm' });
    cache.dispose();
    cache.dispose(); // idempotent
    for (const call of [() => cache.decode(0, decodeInput()), () => cache.prefill(0, prefillInput()), () => cache.length(), () => cache.memory(), () => cache.save(), () => cache.reset()]) {
      expect(call).toThrow(DisposedError);
    }
  });

  it.each([
    ['budget not a multiple of chunkSize', { budget: 30, chunkSize: 8 }],
    ['rank 0', { rank: 0 }],
    ['negative localTokens', { localTokens: -1 }],
  ])('invalid options (%s) are a ConfigError', async (_, bad) => {
    await expect(createCache({ spec, policy: 'shadowkv', backend: 'wasm', options: bad })).rejects.toThrow(ConfigError);
  });

  it.each([
    ['query heads not a multiple of kv heads', { ...spec, queryHeads: 5 }],
    ['odd head dim', { ...spec, headDim: 15 }],
    ['no rope theta', { ...spec, rope: {} as never }],
  ])('an invalid spec (%s) is a ConfigError', async (_, bad) => {
    await expect(createCache({ spec: bad, backend: 'wasm' })).rejects.toThrow(ConfigError);
  });
});
