import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, createCache, loadCache, SNAPSHOT_VERSION, SnapshotError } from '../../packages/shadowkv/src/backend.js';
import { makeTensor, randn, rng } from '../helpers/data.js';

// The bad input every policy must refuse is the conformance kit's (shadowkv/testing, run on each
// built-in in test/policies/); here, what is ShadowKV's own: its snapshots' envelope, options and spec.

const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 };
const rand = rng(99);
const t = (shape: number[]) => makeTensor(randn(shape.reduce((a, b) => a * b, 1), rand), shape, 'f32').t;
describe('ShadowKV: snapshot envelope, options and spec', () => {
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
