// The CUDA backend's host-side contract against bad input and failures (stub addon, no GPU): a
// rejected call is a typed error that names the problem, and a cache whose GPU failed still disposes.
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, CudaError, DisposedError, DTypeError, NonFiniteError, OutOfMemoryError, ShapeError, type DeviceBuffer, type LayerStep } from '../../packages/shadowkv/src/backend.js';
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

describe('host-array decode inputs checked and staged in one addon call (stub addon, no GPU)', () => {
  const bf16Max = 3.3895313892515355e38, f32Max = 3.4028234663852886e38;
  /** A stub whose stageStepInputs scans as the addon does (the first element outside its limit, over q | k | v) and whose tickets count up. */
  const staging = () => {
    const got: { limits: number[] | null; ticket: number }[] = [], tickets: unknown[] = [];
    let issued = 0;
    const { addon, calls } = stubAddon({
      stageStepInputs: (q, k, v, _dtype, limits) => {
        const l = limits === null ? null : Array.from(limits as Float64Array);
        const flat = [...(q as Float32Array), ...(k as Float32Array), ...(v as Float32Array)];
        const n = [(q as Float32Array).length, (k as Float32Array).length];
        const bad = l === null ? -1 : flat.findIndex((x, i) => !(Math.abs(x) <= l[i < n[0]! ? 0 : i < n[0]! + n[1]! ? 1 : 2]!));
        got.push({ limits: l, ticket: bad < 0 ? ++issued : 0 });
        return bad < 0 ? issued : -1 - bad;
      },
      decodeLayer: (...a) => (tickets.push(a[4]), 0),
      checkFiniteHost: () => -1, // with SHADOWKV_CUDA_STAGE=0: every value finite
    });
    return { cache: stubCache(spec, addon), calls, got, tickets };
  };
  const input = () => ({
    query: { data: new Float32Array(64).fill(0.5), shape: [1, 4, 1, 16], dtype: 'f32' as const },
    key: { data: new Float32Array(32).fill(0.25), shape: [1, 2, 1, 16], dtype: 'f32' as const },
    value: { data: new Float32Array(32).fill(-1), shape: [1, 2, 1, 16], dtype: 'f32' as const },
  });

  it('a clean step: one stage call (no separate checks) with each input\'s bound, its ticket handed to that step\'s decodeLayer only', () => {
    const { cache, calls, got, tickets } = staging();
    cache.decode(0, input());
    cache.decode(1, input(), { checkValues: false });
    expect(calls.filter((c) => c === 'stageStepInputs' || c === 'checkFiniteHost' || c === 'decodeLayer')).toEqual(['stageStepInputs', 'decodeLayer', 'stageStepInputs', 'decodeLayer']);
    // The query is rotated in f32 (within f32's max / sqrt 2); a bf16 cache stores keys after RoPE (within max / sqrt 2) and values.
    expect(got).toEqual([{ limits: [f32Max / Math.SQRT2, bf16Max / Math.SQRT2, bf16Max], ticket: 1 }, { limits: null, ticket: 2 }]);
    expect(tickets).toEqual([1, 2]);
    expect(cache.length(0, 0)).toBe(1);
    cache.dispose();
  });

  it('a bad element at every position of q | k | v: the error names its input and its own index', () => {
    const { cache } = staging();
    const sizes = { query: 64, key: 32, value: 32 } as const;
    for (let flat = 0; flat < 128; flat++) {
      const x = input();
      const [name, at] = flat < 64 ? ['query', flat] as const : flat < 96 ? ['key', flat - 64] as const : ['value', flat - 96] as const;
      expect(at).toBeLessThan(sizes[name]);
      x[name].data[at] = Infinity;
      expect(() => cache.decode(0, x)).toThrow(`decode(layer 0): ${name}[${at}] is Infinity (flat index)`);
    }
    expect(cache.length(0, 0)).toBe(0);
    cache.dispose();
  });

  it('the output goes to the addon\'s pinned block and comes back by readHost; SHADOWKV_CUDA_STAGE=0 and SHADOWKV_CUDA_MAPPED_OUT=0 turn each path off', () => {
    const calls = () => {
      const { cache, calls } = staging();
      cache.decode(0, input());
      cache.dispose();
      return calls.filter((c) => ['stageStepInputs', 'checkFiniteHost', 'outputBlock', 'readHost', 'read'].includes(c));
    };
    try {
      expect(calls()).toEqual(['stageStepInputs', 'outputBlock', 'readHost']);
      process.env.SHADOWKV_CUDA_STAGE = '0';
      expect(calls()).toEqual(['checkFiniteHost', 'checkFiniteHost', 'checkFiniteHost', 'outputBlock', 'readHost']);
      process.env.SHADOWKV_CUDA_MAPPED_OUT = '0';
      expect(calls()).toEqual(['checkFiniteHost', 'checkFiniteHost', 'checkFiniteHost', 'read']);
    } finally {
      delete process.env.SHADOWKV_CUDA_STAGE;
      delete process.env.SHADOWKV_CUDA_MAPPED_OUT;
    }
  });

  it('the output block is asked of the addon only to grow; every device of the addon sees a growth, and a failed one leaves no address', () => {
    let next = 0x7000_0000, full = false;
    const asked: number[] = [];
    const { addon } = stubAddon({
      outputBlock: (bytes) => {
        asked.push(bytes as number);
        if (full) throw Object.assign(new Error('outputBlock: cudaErrorMemoryAllocation (2): out of memory'), { cudaCode: 2, op: 'outputBlock' });
        return (next += 0x10_0000);
      },
    });
    const [one, two] = [new CudaDevice(addon, 0), new CudaDevice(addon, 0)];
    const first = one.hostOutput!(64, 'f32').ptr;
    expect(one.hostOutput!(32, 'bf16').ptr).toBe(first);
    const grown = two.hostOutput!(1024, 'f32').ptr;
    expect(grown).not.toBe(first);
    expect(one.hostOutput!(64, 'f32')).toMatchObject({ ptr: grown, length: 64, dtype: 'f32', tier: 'host' });
    expect(asked).toEqual([256, 4096]);
    full = true;
    expect(() => one.hostOutput!(4096, 'f32')).toThrow(OutOfMemoryError);
    expect(() => two.hostOutput!(16, 'f32')).toThrow(OutOfMemoryError); // asked again: the old block is gone
    full = false;
    expect(two.hostOutput!(16, 'f32').ptr).not.toBe(grown);
    expect(asked).toEqual([256, 4096, 16384, 64, 64]);
  });

  it.each([['query', 0, 5], ['key', 64, 31], ['value', 96, 0]] as const)('a bad element of the %s: a NonFiniteError naming it and its own index, the step not taken', (name, before, i) => {
    const { cache, calls } = staging();
    const x = input();
    x[name].data[i] = name === 'value' ? 4e38 : NaN; // out of bf16's range, or not a number
    const why = name === 'value' ? `${name}[${i}] is ${x[name].data[i]} (flat index); inputs must be finite and within ±3.38953e+38 to fit 'bf16' storage` : `${name}[${i}] is NaN (flat index)`;
    expect(() => cache.decode(0, x)).toThrow(NonFiniteError);
    expect(() => cache.decode(0, x)).toThrow(`decode(layer 0): ${why}`);
    expect(before + i).toBeLessThan(128);
    expect(calls.includes('decodeLayer')).toBe(false);
    expect(cache.length(0, 0)).toBe(0);
    x[name].data[i] = 1;
    cache.decode(0, x);
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
