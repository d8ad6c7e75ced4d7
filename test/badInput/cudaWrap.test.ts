import { describe, expect, it } from 'vitest';
import { ConfigError, createCache, ShapeError } from '../../packages/shadowkv/src/backend.js';
import { findAddon } from '../../packages/shadowkv-cuda/src/index.js';
import { loadAddon } from '../../packages/shadowkv-cuda/src/loadAddon.js';
import { forEachEnv } from '../envs.js';
import { stubAddon, stubCache } from '../helpers/stubAddon.js';

// wrapTensor over memory the host loop owns: a kernel that reads a misaligned element, or past the
// allocation that holds the pointer, ends the process's CUDA context (every cache in it), so both
// are typed errors at wrapTensor, which leave the cache as it was. The extent is the driver's
// (cuMemGetAddressRange through the addon's pointerInfo); where it cannot say, the shape is trusted.

const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const BASE = 0x7f00_0000_0000;

describe('wrapTensor against the allocation the driver reports (stub addon, no GPU)', () => {
  const cacheOver = (range: { base: number; size: number }) => stubCache(spec, stubAddon({ pointerInfo: () => ({ type: 2, device: 0, ...range }) }).addon);

  it('a shape within the allocation is taken, one element past its end is a ShapeError naming both, from any offset', () => {
    const cache = cacheOver({ base: BASE, size: 4096 });
    expect(cache.wrapTensor(BASE, [2048], 'bf16').shape).toEqual([2048]);
    expect(cache.wrapTensor(BASE + 1024, [1, 2, 1, 384], 'f32').shape).toEqual([1, 2, 1, 384]);
    expect(() => cache.wrapTensor(BASE, [2049], 'bf16')).toThrow(ShapeError);
    expect(() => cache.wrapTensor(BASE + 1024, [1, 2, 1, 385], 'f32')).toThrow(
      'wrapTensor(): 770 f32 elements (3080 bytes) from 0x7f0000000400 pass the end of its allocation, which holds 3072 bytes from there (4096 from 0x7f0000000000); wrap a shape that fits',
    );
    expect(cache.wrapTensor(BASE + 4094, [1], 'f16').shape).toEqual([1]);
  });

  it('a refused wrap leaves the cache as it was: its tensors, and wrapping again', () => {
    const cache = cacheOver({ base: BASE, size: 64 });
    const before = cache.memory();
    expect(() => cache.wrapTensor(BASE, [17], 'f32')).toThrow(ShapeError);
    expect(() => cache.wrapTensor(BASE + 2, [1], 'f32')).toThrow(ConfigError);
    expect(cache.memory()).toEqual(before);
    const t = cache.wrapTensor(BASE, [16], 'f32');
    cache.dispose();
    expect(t.disposed).toBe(true);
  });

  it('an address that is not a multiple of its element is a ConfigError before the driver is asked', () => {
    const cache = cacheOver({ base: BASE, size: 1 << 20 });
    expect(() => cache.wrapTensor(BASE + 1, [4], 'bf16')).toThrow('wrapTensor(): address 0x7f0000000001 is not a multiple of 2, the bytes of a bf16 element');
    expect(() => cache.wrapTensor(BASE + 6, [4], 'f32')).toThrow(ConfigError);
    expect(cache.wrapTensor(BASE + 6, [4], 'f16').shape).toEqual([4]);
  });

  it('where the driver cannot tell the extent (-1), the shape is trusted', () => {
    const cache = cacheOver({ base: -1, size: -1 });
    expect(cache.wrapTensor(BASE, [1 << 20], 'f32').shape).toEqual([1 << 20]);
  });
});

// On a GPU: the driver's answer for the SDK's own device memory (the stream-ordered pool), a shape
// that fills the allocation to its last byte runs a decode step as an allocated tensor does, and
// one element more is refused, the cache unchanged.
forEachEnv('cuda: wrapTensor past its allocation', (env) => {
  it('the driver reports the allocation; a tensor to its last byte runs, one element more is a ShapeError, the cache unchanged', async () => {
    const cache = await createCache({ spec, policy: 'full', batch: 1, dtype: env.dtype, backend: env.backend });
    const loop = await createCache({ spec, policy: 'full', batch: 1, dtype: env.dtype, backend: env.backend });
    const bytes = env.dtype === 'f32' ? 4 : 2;
    const mine = loop.allocTensor([1, 4, 1, 16], env.dtype); // memory of "the host loop"
    const at = loadAddon(findAddon()).pointerInfo(mine.address);
    expect(at.size).toBeGreaterThan(0);
    expect(at.base).toBeLessThanOrEqual(mine.address);
    expect(at.base + at.size).toBeGreaterThanOrEqual(mine.address + 64 * bytes);
    const fits = (at.base + at.size - mine.address) / bytes;
    expect(Number.isInteger(fits)).toBe(true);
    expect(cache.wrapTensor(mine.address, [fits], env.dtype).shape).toEqual([fits]);
    const before = cache.memory();
    expect(() => cache.wrapTensor(mine.address, [fits + 1], env.dtype)).toThrow(ShapeError);
    expect(() => cache.wrapTensor(mine.address + 1, [1], env.dtype)).toThrow(ConfigError);
    expect(cache.memory()).toEqual(before);
    const q = cache.wrapTensor(mine.address, [1, 4, 1, 16], env.dtype);
    const kv = loop.allocTensor([1, 2, 1, 16], env.dtype);
    expect(cache.decode(0, { query: q, key: kv, value: kv }).shape).toEqual([1, 4, 1, 16]);
    cache.dispose();
    loop.dispose();
  });
}, (e) => e.name.startsWith('cuda'));
