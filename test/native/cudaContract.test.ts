// The CUDA backend's host-side contract against bad input and failures (stub addon, no GPU): a
// rejected call is a typed error that names the problem, and a cache whose GPU failed still disposes.
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, CudaError, DisposedError, DTypeError, OutOfMemoryError, ShapeError, type DeviceBuffer, type LayerStep } from '../../packages/shadowkv/src/backend.js';
import { CudaDevice } from '../../packages/shadowkv-cuda/src/index.js';
import { stubAddon, stubCache } from '../helpers/stubAddon.js';

const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const sticky = Object.assign(new Error('free: cudaErrorIllegalAddress (700): an illegal memory access was encountered'), { cudaCode: 700, op: 'free' });

describe('a cache whose CUDA context was lost (stub addon, no GPU)', () => {
  it('disposes anyway: the CudaError once, every tensor retired, the rest given back, a second dispose a no-op', () => {
    let lost = false;
    const fail = () => {
      if (lost) throw sticky;
      return 0;
    };
    const { addon, calls } = stubAddon({ free: fail, freeHost: fail, trimPool: fail });
    const cache = stubCache(spec, addon);
    const [a, b] = [cache.allocTensor([4], 'f32'), cache.allocTensor([2, 8], 'bf16')];
    lost = true;
    const before = calls.length;
    expect(() => cache.dispose()).toThrow(CudaError);
    expect([a.disposed, b.disposed]).toEqual([true, true]);
    expect(() => b.read()).toThrow(DisposedError);
    expect(calls.slice(before).filter((c) => c === 'free').length).toBeGreaterThan(2); // the device freed what the cache could not
    expect(() => cache.dispose()).not.toThrow();
    expect(() => cache.length()).toThrow(DisposedError);
  });
});

describe('a decode CUDA refused (stub addon, no GPU)', () => {
  it('out of memory for its workspace leaves the cache as it was: the lengths, and the previous output readable', () => {
    let full = false;
    const { addon } = stubAddon({
      decodeLayer: () => {
        if (full) throw Object.assign(new Error('decodeLayer: cudaErrorMemoryAllocation (2): out of memory'), { cudaCode: 2, op: 'decodeLayer' });
        return 0;
      },
      checkFinite: (table) => new Array((table as Float64Array).length / 4).fill(-1), // every value finite
    });
    const cache = stubCache(spec, addon);
    const [query, key] = [cache.allocTensor([1, 4, 1, 16], 'bf16'), cache.allocTensor([1, 2, 1, 16], 'bf16')];
    const first = cache.decode(0, { query, key, value: key });
    full = true;
    expect(() => cache.decode(0, { query, key, value: key })).toThrow(OutOfMemoryError);
    expect(first.disposed).toBe(false);
    expect(() => first.read()).not.toThrow();
    expect(cache.length(0, 0)).toBe(1);
    cache.dispose();
  });
});

describe('device tensors on CUDA (stub addon, no GPU)', () => {
  it('read into an array of another dtype is a DTypeError, of another length a ShapeError, as write', () => {
    const cache = stubCache(spec, stubAddon().addon);
    const t = cache.allocTensor([2, 3], 'bf16');
    expect(() => t.read(new Float32Array(6))).toThrow(DTypeError);
    expect(() => t.read(new Float32Array(6))).toThrow("DeviceTensor.read(): a 'bf16' tensor takes a Uint16Array, into is [object Float32Array]");
    expect(() => t.read(new Uint16Array(5))).toThrow(ShapeError);
    expect(() => t.read(new Uint16Array(5))).toThrow('DeviceTensor.read(): the tensor is [2, 3] (6 elements), into has 5');
    expect(() => t.write(new Int16Array(6) as never)).toThrow("DeviceTensor.write(): a 'bf16' tensor takes a Uint16Array, the data is [object Int16Array]");
    cache.dispose();
  });

  it('wrapTensor of a BigInt pointer is a ConfigError that shows it as one', () => {
    const cache = stubCache(spec, stubAddon().addon);
    expect(() => cache.wrapTensor(BigInt(0x1000) as never, [4], 'f32')).toThrow(ConfigError);
    expect(() => cache.wrapTensor(BigInt(0x1000) as never, [4], 'f32')).toThrow('wrapTensor(): address must be a positive integer (a device pointer), got 4096n');
    cache.dispose();
  });
});

describe('the fused step\'s groupings from the environment (stub addon, no GPU)', () => {
  const names = ['SHADOWKV_CUDA_LOGIT_SPLIT', 'SHADOWKV_CUDA_SELECT_BLOCKS', 'SHADOWKV_CUDA_STEP_GROUPS'] as const;
  afterEach(() => names.forEach((n) => delete process.env[n]));
  const buffer = (dtype: DeviceBuffer['dtype']): DeviceBuffer => ({ ptr: 0x10000, length: 1 << 20, dtype, tag: 't', tier: 'device' });
  /** Words 25-27 of the step record a device made now hands the addon: logit split, select blocks, step groups. */
  const recorded = () => {
    let record = new Uint8Array(0);
    const { addon } = stubAddon({ decodeLayer: (r) => ((record = (r as Uint8Array).slice()), 0) });
    const geometry = { queryHeads: 4, kvHeads: 2, headDim: 16, chunkSize: 8, maxSelected: 8, maxOutliers: 0, localTokens: 0, scale: 0.25, scoreScale: 1, ropeStyle: 'half' as const, invFreq: buffer('f64'), dtype: 'bf16' as const };
    const at = (buf: DeviceBuffer) => ({ buf, offset: 0 });
    const step: LayerStep = { geometry, ioDtype: 'f32', q: at(buffer('f32')), k: at(buffer('f32')), v: at(buffer('f32')), out: at(buffer('f32')), counters: buffer('f64'), rows: [] };
    new CudaDevice(addon, 0).decodeLayer(step);
    return Array.from(new Int32Array(record.buffer, 25 * 4, 3));
  };

  it('a count is passed on, unset or empty is 0 (the kernels choose)', () => {
    expect(recorded()).toEqual([0, 0, 0]);
    [process.env.SHADOWKV_CUDA_LOGIT_SPLIT, process.env.SHADOWKV_CUDA_SELECT_BLOCKS, process.env.SHADOWKV_CUDA_STEP_GROUPS] = ['2', ' 16 ', ''];
    expect(recorded()).toEqual([2, 16, 0]);
  });

  it.each(names.flatMap((name) => ['abc', '8x', '-1', '1.5', '1e3', '3000000000', 'Infinity'].map((value) => [name, value])))('%s=%s is a ConfigError naming it', (name, value) => {
    process.env[name] = value;
    expect(() => new CudaDevice(stubAddon().addon, 0)).toThrow(ConfigError);
    expect(() => new CudaDevice(stubAddon().addon, 0)).toThrow(`${name} must be a count in [0, 2147483647] (the kernels read it as an int32), got "${value}"; unset it for the default`);
  });
});
