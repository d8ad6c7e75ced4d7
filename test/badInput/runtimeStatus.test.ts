// Every status a runtime op returns (skv_status: lowRankKeys, decode_layer) reaches the user as a
// typed error, on wasm and on CUDA (stub addon, no GPU): never a bare RangeError.
import { describe, expect, it } from 'vitest';
import { createCache, NonFiniteError, OutOfMemoryError, ShadowKVError, ShapeError, type DeviceBuffer, type LayerStep } from '../../packages/shadowkv/src/backend.js';
import { KitInputs } from '../../packages/shadowkv/src/testing/inputs.js';
import { CudaDevice } from '../../packages/shadowkv-cuda/src/index.js';
import { stubAddon } from '../helpers/stubAddon.js';

const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const options = { budget: 16, rank: 8, chunkSize: 4, localTokens: 4, maxRecentTokens: 16, denseThreshold: 24 };

describe('wasm: the factorization of keys holding a NaN', () => {
  it('a NaN key decoded with checkValues: false is a NonFiniteError when the row is compressed', async () => {
    const cache = await createCache({ spec, policy: 'shadowkv', dtype: 'f32', backend: 'wasm', options });
    const inputs = new KitInputs(3, spec);
    cache.prefill(0, inputs.prompt(1, 12));
    const step = inputs.step(1);
    (step.key.data as Float32Array)[5] = NaN;
    cache.decode(0, step, { checkValues: false });
    // The decode step that brings the row to denseThreshold compresses it.
    let thrown: unknown;
    try {
      while (cache.length(0) < options.denseThreshold + 1) cache.decode(0, inputs.step(1));
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(NonFiniteError);
    expect((thrown as Error).message).toMatch(/lowRankKeys: the 20 keys to compress hold a NaN or infinite value \(status 2\); nothing was compressed. Inputs sent with checkValues: false are not checked/);
    cache.dispose();
  });
});

describe('CUDA (stub addon, no GPU): every status of lowRankKeys and decodeLayer is typed', () => {
  const buffer = (dtype: DeviceBuffer['dtype']): DeviceBuffer => ({ ptr: 0x10000, length: 1 << 20, dtype, tag: 't', tier: 'device' });
  const at = (buf: DeviceBuffer) => ({ buf, offset: 0 });
  const out = { u: at(buffer('f32')), sv: at(buffer('f32')), proj: at(buffer('f32')), sigma: at(buffer('f32')) };
  const device = (status: number) => new CudaDevice(stubAddon({ lowRankKeys: () => status, joinLowRankKeysAside: () => status, decodeLayer: () => status }).addon, 0);

  it.each([
    ['OutOfMemoryError', 1, OutOfMemoryError, /lowRankKeys: the device and pinned host memory could not hold the workspace for S=32, D=16, rank=8/],
    ['NonFiniteError', 2, NonFiniteError, /lowRankKeys: the 32 keys to compress hold a NaN or infinite value \(status 2\)/],
    ['ShapeError', 7, ShapeError, /lowRankKeys: the runtime rejected S=32, D=16, rank=8, oversample=4, powerIters=1 \(status 7\)/],
  ])('lowRankKeys: a %s for status %i, inline and alongside', (_name, status, type, message) => {
    const d = device(status);
    expect(() => d.lowRankKeys(at(buffer('f32')), 32, 16, 8, 4, 1, 0, out)).toThrow(type);
    expect(() => d.lowRankKeys(at(buffer('f32')), 32, 16, 8, 4, 1, 0, out)).toThrow(message);
    expect(d.lowRankKeysAlongside(at(buffer('f32')), 32, 16, 8, 4, 1, 0, out)).toThrow(message);
  });

  it('lowRankKeys status 2 for sizes the runtime does not take is a ShapeError naming the range', () => {
    expect(() => device(2).lowRankKeys(at(buffer('f32')), 4, 16, 8, 0, 1, 0, out)).toThrow(ShapeError);
    expect(() => device(2).lowRankKeys(at(buffer('f32')), 4, 16, 8, 0, 1, 0, out)).toThrow(/it takes 0 < rank <= min\(S, D\)/);
  });

  it.each([
    ['OutOfMemoryError', 1, OutOfMemoryError, /decode_layer: CUDA device 0 could not hold the step's workspace; nothing was changed/],
    ['ShapeError', 2, ShapeError, /decode_layer: the runtime rejected the step record \(status 2\)/],
  ])('decodeLayer: a %s for status %i', (_name, status, type, message) => {
    const geometry = { queryHeads: 4, kvHeads: 2, headDim: 16, chunkSize: 8, maxSelected: 8, maxOutliers: 0, localTokens: 0, scale: 0.25, scoreScale: 1, ropeStyle: 'half' as const, invFreq: buffer('f64'), dtype: 'bf16' as const };
    const step: LayerStep = { geometry, ioDtype: 'f32', q: at(buffer('f32')), k: at(buffer('f32')), v: at(buffer('f32')), out: at(buffer('f32')), counters: buffer('f64'), rows: [] };
    let thrown: unknown;
    try {
      device(status).decodeLayer(step);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(type);
    expect(thrown).toBeInstanceOf(ShadowKVError);
    expect((thrown as Error).message).toMatch(message);
  });
});
