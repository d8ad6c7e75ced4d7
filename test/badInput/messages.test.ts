import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, createCache, DTypeError, NonFiniteError, ShapeError, type Cache } from '../../packages/shadowkv/src/backend.js';
import { checkKeys } from '../../packages/shadowkv/src/config.js';

// The exact wording of the errors whose text decode() and checkKeys build only when they throw (so
// that a step's JavaScript makes no strings): lazily worded, they must read as they did when eager.

const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 8, rope: { theta: 10000 } };
const f32 = (shape: number[], fill = 0.1) => ({ data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill), shape, dtype: 'f32' as const });
const step = (rows: number) => ({ query: f32([rows, 4, 1, 8]), key: f32([rows, 2, 1, 8]), value: f32([rows, 2, 1, 8]) });

describe('decode and prefill errors, word for word', () => {
  let cache: Cache;
  beforeAll(async () => {
    cache = await createCache({ spec, batch: 2, dtype: 'bf16', backend: 'wasm' });
    cache.prefill(0, { keys: f32([2, 2, 4, 8]), values: f32([2, 2, 4, 8]) });
  });
  afterAll(() => cache.dispose());

  it.each([
    ['a query for 1 row of 2', { ...step(2), query: f32([1, 4, 1, 8]) }, undefined, ShapeError,
      'decode(layer 0): query is [1, 4, 1, 8], but the cache holds 2 rows and spec has 4 query heads of dim 8, so expected [2, 4, 1, 8]'],
    ['a key of 3 heads for named sequences', { ...step(1), key: f32([1, 3, 1, 8]) }, { sequences: [1] }, ShapeError,
      'decode(layer 0): key is [1, 3, 1, 8], but 1 sequences were named and spec has 2 kv heads of dim 8, so expected [1, 2, 1, 8]'],
    ['a value unlike the key', { ...step(2), value: f32([2, 2, 1, 4]) }, undefined, ShapeError,
      'decode(layer 0): value is [2, 2, 1, 4], but value must match key, so expected [2, 2, 1, 8]'],
    ['a query whose data is a Uint16Array', { ...step(2), query: { ...f32([2, 4, 1, 8]), data: new Uint16Array(64) } }, undefined, DTypeError,
      "decode(layer 0): query has dtype 'f32' but its data is a Uint16Array, expected Float32Array"],
    ['a misspelt option', step(2), { sequence: [0] }, ConfigError,
      "decode(layer 0): options: unknown option 'sequence'; known: sequences, out, checkValues"],
    ['two unknown input keys', { ...step(2), keys: 1, Query: 2 }, undefined, ConfigError,
      "decode(layer 0): input: unknown options 'keys', 'Query'; known: query, key, value"],
    ['a key past bf16 after RoPE', { ...step(2), key: f32([2, 2, 1, 8], 3e38) }, undefined, NonFiniteError,
      "decode(layer 0): key[0] is 3.0000000054977558e+38 (flat index); inputs must be finite and within ±2.39676e+38 to fit 'bf16' storage after RoPE"],
  ])('%s', (_, input, options, type, message) => {
    const call = () => cache.decode(0, input as never, options as never);
    expect(call).toThrow(type);
    expect(call).toThrow(message);
  });

  it.each([
    ['keys of 3 kv heads', { keys: f32([1, 3, 4, 8]), values: f32([1, 3, 4, 8]) }, 'prefill(layer 0): keys is [1, 3, 4, 8], but spec has 2 kv heads of dim 8, so expected ["*", 2, "*", 8]'],
    ['values unlike the keys', { keys: f32([1, 2, 4, 8]), values: f32([1, 2, 3, 8]) }, 'prefill(layer 0): values is [1, 2, 3, 8], but values must match keys, so expected [1, 2, 4, 8]'],
    ['queries of 2 heads', { keys: f32([1, 2, 4, 8]), values: f32([1, 2, 4, 8]), queries: f32([1, 2, 4, 8]) }, 'prefill(layer 0): queries is [1, 2, 4, 8], but spec has 4 query heads and keys hold 4 tokens, so expected [1, 4, 4, 8]'],
  ])('prefill: %s', (_, input, message) => {
    expect(() => cache.prefill(0, input)).toThrow(ShapeError);
    expect(() => cache.prefill(0, input)).toThrow(message);
  });

  it('a query proxy that throws on a key read still names the key (capture reads each once)', () => {
    const query = new Proxy(f32([2, 4, 1, 8]), { get: (t, k) => { if (k === 'shape') throw new Error('no shape'); return Reflect.get(t, k); } });
    expect(() => cache.decode(0, { ...step(2), query })).toThrow('decode(layer 0): reading query.shape threw ("no shape")');
  });
});

describe('checkKeys', () => {
  it('lists the known keys, or says where they are, only in the error', () => {
    expect(() => checkKeys('f options', { a: 1, b: 2, c: 3 }, ['a'])).toThrow(new ConfigError("f options: unknown options 'b', 'c'; known: a"));
    expect(() => checkKeys('f options', { z: 1 }, [])).toThrow(new ConfigError("f options: unknown option 'z'; it takes none"));
    expect(() => checkKeys('f options', { z: 1 }, ['a'], 'see the docs')).toThrow(new ConfigError("f options: unknown option 'z'; see the docs"));
    expect(() => checkKeys('f options', 5, ['a'])).toThrow(new ConfigError('f options must be an object, got 5'));
    expect(() => checkKeys('f options', { a: 1 }, ['a'])).not.toThrow();
  });
});
