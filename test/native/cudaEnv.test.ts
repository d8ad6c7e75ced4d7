// The environment the CUDA backend reads (no GPU needed): a value the native code does not take,
// or a SHADOWKV_CUDA_ADDON path that is no binary, is refused with a typed error naming the
// variable and what it takes, before any binary is looked for or loaded.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, NoBinaryError } from '../../packages/shadowkv/src/errors/index.js';
import { ADDON_ENV, CUDA_ENV, createCudaBackend, findAddon } from '../../packages/shadowkv-cuda/src/index.js';
import { createCache } from '../../packages/shadowkv/src/backend.js';

const set: string[] = [];
const setEnv = (name: string, value: string) => (set.push(name), (process.env[name] = value));
afterEach(() => set.splice(0).forEach((name) => delete process.env[name]));
const rejection = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);

describe('createCudaBackend checks every variable the addon reads', () => {
  it.each([
    ['SHADOWKV_CUDA_SYNC', 'false', '0 (ops queue, the default) or 1 (every op waits for its kernels)'],
    ['SHADOWKV_CUDA_SYNC', 'no', '0 (ops queue, the default) or 1'],
    ['SHADOWKV_CUDA_GRAPHS', 'false', '0 (off) or 1 (on, the default)'],
    ['SHADOWKV_CUDA_PDL', 'off', '0 (off) or 1 (on, the default)'],
    ['SHADOWKV_CUDA_IDLE_UPLOAD', 'no', '0 (off) or 1 (on, the default)'],
    ['SHADOWKV_CUDA_STAGE', 'false', '0 (off) or 1 (on, the default)'],
    ['SHADOWKV_CUDA_MAPPED_OUT', '00', '0 (off) or 1 (on, the default)'],
    ['SHADOWKV_CUDA_DENSE', '2', '0 (the composed attention) or 1'],
    ['SHADOWKV_CUDA_REBUILD', 'SIMT', 'simt (the key rebuild without tensor cores)'],
    ['SHADOWKV_CUDA_FETCH_GRID', '8x', 'a count in [0, 2147483647]'],
    ['SHADOWKV_CUDA_STEP_GROUPS', '-1', 'a count in [0, 2147483647]'],
    ['SKV_HOST_THREADS', '', 'an integer in [1, 64]'],
    ['SKV_HOST_THREADS', '65', 'an integer in [1, 64]'],
    ['SKV_LOW_RANK_TRACE', 'yes', '0 or 1'],
  ])('%s=%j is a ConfigError naming it and the values it takes', async (name, value, takes) => {
    setEnv(name, value);
    const err = await rejection(createCudaBackend());
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toContain(`${name} must be ${takes}`);
    expect((err as Error).message).toContain(`got ${JSON.stringify(value)}; unset it for the default`);
  });

  it('the documented values pass the check (the search then goes on to the binary)', async () => {
    for (const [name, value] of [['SHADOWKV_CUDA_SYNC', '1'], ['SHADOWKV_CUDA_GRAPHS', '0'], ['SHADOWKV_CUDA_DENSE', ''], ['SHADOWKV_CUDA_REBUILD', 'simt'], ['SHADOWKV_CUDA_FETCH_GRID', '66'], ['SKV_HOST_THREADS', '64']] as const) setEnv(name, value);
    setEnv(ADDON_ENV, '/nonexistent/shadowkv_cuda.node');
    expect(await rejection(createCudaBackend())).toBeInstanceOf(NoBinaryError);
  });

  it("backend 'auto' with SHADOWKV_CUDA_DEVICE that is no ordinal takes wasm and gives the refusal as its reason", async () => {
    setEnv('SHADOWKV_CUDA_DEVICE', 'gpu1');
    const cache = await createCache({ spec: { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } }, policy: 'full', backend: 'auto', maxTokens: 64 });
    try {
      expect(cache.backendInfo.name).toBe('wasm');
      expect(cache.backendInfo.reason).toContain('SHADOWKV_CUDA_DEVICE must be a CUDA device ordinal in [0, 2147483647]');
      expect(cache.backendInfo.reason).toContain('got "gpu1"');
    } finally {
      cache.dispose();
    }
  });

  // Read from the sources, so a variable added to the native code without its rule here fails
  // (SHADOWKV_CUDA_IDLE_UPLOAD went unchecked for a session that way).
  it('lists every SHADOWKV_CUDA_ variable the native code reads (every quoted name in runtime/cuda and kernels)', () => {
    const dirs = ['runtime/cuda', 'kernels'];
    const read = new Set(dirs.flatMap((dir) => readdirSync(dir).filter((f) => /\.(cc|h|cu|cuh)$/.test(f))
      .flatMap((f) => [...readFileSync(join(dir, f), 'utf8').matchAll(/"(SHADOWKV_CUDA_[A-Z0-9_]+)"/g)].map((m) => m[1]!))));
    expect(read.size).toBeGreaterThanOrEqual(11);
    expect(Object.keys(CUDA_ENV)).toEqual(expect.arrayContaining([...read]));
  });
});

describe('SHADOWKV_CUDA_ADDON names the one binary tried', () => {
  it.skipIf(process.platform !== 'linux' || process.arch !== 'x64')('a path that does not exist, or a directory, is a NoBinaryError naming it and why; no other binary is tried', async () => {
    setEnv(ADDON_ENV, '/nonexistent/shadowkv_cuda.nod');
    expect(() => findAddon()).toThrow(NoBinaryError);
    expect(() => findAddon()).toThrow('SHADOWKV_CUDA_ADDON is "/nonexistent/shadowkv_cuda.nod", and /nonexistent/shadowkv_cuda.nod does not exist; point it at a shadowkv_cuda.node, or unset it');
    const dir = mkdtempSync(join(tmpdir(), 'skv-addon-'));
    try {
      setEnv(ADDON_ENV, dir);
      expect(() => findAddon()).toThrow(`and ${dir} is not a file`);
      const file = join(dir, 'shadowkv_cuda.node');
      writeFileSync(file, 'not a binary');
      setEnv(ADDON_ENV, file);
      expect(findAddon()).toBe(file); // the probe child then says why it does not load
      const err = await rejection(createCudaBackend());
      expect(err).toBeInstanceOf(NoBinaryError);
      expect((err as Error).message).toContain(`${file} failed in the probe process (load)`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
