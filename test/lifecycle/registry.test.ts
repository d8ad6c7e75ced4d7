import { describe, expect, it } from 'vitest';
import {
  ConfigError, createCache, FullKVCache, listBackends, listPolicies, NoBinaryError, NoDeviceError, registerBackend, registerPolicy, resolveBackend,
} from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { registerLandmarkWindow } from '../../examples/custom-policy/LandmarkWindowCache.js';
import { ENVS } from '../envs.js';

const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };

// Whether cuda starts on this machine (a GPU and the built addon): `auto` must then take it.
const cuda = ENVS.ready.some((e) => e.backend === 'cuda');

describe('backend registry', () => {
  it(`lists cuda before wasm, and auto takes ${cuda ? 'cuda, which starts here' : 'wasm, saying why cuda did not start'}`, async () => {
    expect(listBackends()).toEqual(['cuda', 'wasm']);
    const cache = await createCache({ spec, policy: 'full' });
    expect(cache.backendInfo.name).toBe(cuda ? 'cuda' : 'wasm');
    if (!cuda) expect(cache.backendInfo.reason).toMatch(/cuda unavailable \(.*shadowkv-cuda/);
    cache.dispose();
  });

  it.skipIf(cuda)(`asking for 'cuda' where it cannot start is a typed error, not a silent fallback${cuda ? ' skipped: cuda starts on this machine' : ''}`, async () => {
    // NoBinaryError without the built addon; NoDeviceError with it, on a machine without a GPU.
    const err = await createCache({ spec, backend: 'cuda' }).then(() => undefined, (e: unknown) => e);
    expect(err instanceof NoBinaryError || err instanceof NoDeviceError).toBe(true);
    expect((err as Error).message).toMatch(/shadowkv-cuda/);
  });

  it('an unknown backend name is a ConfigError listing the registered ones', async () => {
    await expect(resolveBackend('tpu')).rejects.toThrow(/unknown backend 'tpu'; registered: cuda, wasm/);
  });

  it('a different factory under a taken name throws; the same one is a no-op', () => {
    const factory = async () => (await resolveBackend('wasm')).backend;
    registerBackend('wasm-alias', factory, 0);
    expect(() => registerBackend('wasm-alias', factory, 0)).not.toThrow();
    expect(() => registerBackend('wasm-alias', async () => factory(), 0)).toThrow(ConfigError);
  });
});

describe('policy registry', () => {
  it('a registered plugin runs by name, and differs from full only by what it attends', async () => {
    registerLandmarkWindow();
    expect(listPolicies()).toEqual(['full', 'shadowkv', 'streaming', 'quest', 'snapkv', 'landmark-window']);
    const work = new NeedleWorkload({ ...spec, layers: 1 }, { tokens: 100, seed: 1 });
    const mine = await createCache({ spec, policy: 'landmark-window', dtype: 'f32', options: { budget: 1000 } });
    const full = await createCache({ spec, policy: 'full', dtype: 'f32' });
    expect(full).toBeInstanceOf(FullKVCache);
    const prompt = work.prompt(0);
    for (const c of [mine, full]) c.prefill(0, prompt);
    const input = work.step(0);
    expect(Array.from(mine.decode(0, input).data)).toEqual(Array.from(full.decode(0, input).data)); // the budget covers all
    const narrow = await createCache({ spec, policy: 'landmark-window', dtype: 'f32', options: { budget: 16, recentTokens: 8 } });
    narrow.prefill(0, prompt);
    expect(Array.from(narrow.decode(0, input).data)).not.toEqual(Array.from(full.decode(0, input).data));
    expect(narrow.stats().lastAttendedTokens).toBe(16 + 13); // per kv head: 2 chunks, then every row from the first chunk the 8-token window reaches (88..100)
  });

  it('a name taken by another factory is a ConfigError; the same factory again is a no-op', () => {
    expect(() => registerLandmarkWindow()).not.toThrow();
    expect(() => registerPolicy('landmark-window', (config, runtime) => new FullKVCache(config, runtime))).toThrow(ConfigError);
    expect(() => registerPolicy('quest', (config, runtime) => new FullKVCache(config, runtime))).toThrow(/taken by another factory/);
  });

  it('an unknown policy is a ConfigError naming the registered ones', async () => {
    await expect(createCache({ spec, policy: 'h2o' })).rejects.toThrow(/unknown policy 'h2o'; registered: full, shadowkv/);
  });
});

describe('lifetimes', () => {
  it('dispose() frees every device and host byte the cache allocated', async () => {
    const work = new NeedleWorkload(spec, { tokens: 300, seed: 2 });
    const cache = await createCache({ spec, policy: 'shadowkv', options: { budget: 32, rank: 8, denseThreshold: 64 } });
    cache.prefill(0, work.prompt(0));
    cache.decode(0, work.step(0));
    expect(cache.memory().host).toBeGreaterThan(0);
    const device = (cache as unknown as { device: { memory(): { device: number; host: number } } }).device;
    cache.reset();
    expect(device.memory().host).toBe(0); // reset returns the compressed store
    cache.dispose();
    expect(device.memory()).toMatchObject({ device: 0, host: 0 });
  });

  it('using declarations dispose at scope exit (Symbol.dispose)', async () => {
    const cache = await createCache({ spec, policy: 'full' });
    cache[Symbol.dispose]();
    expect(() => cache.length()).toThrow(/disposed/);
  });
});

describe("the guide's backend recipe", () => {
  it('a second runtime registered under its own name serves caches (the scalar wasm build here)', async () => {
    const { createWasmBackend } = await import('../../packages/shadowkv/src/backend.js');
    registerBackend('wasm-plain', () => createWasmBackend({ variant: 'plain' }), 0);
    const plain = await createCache({ spec, policy: 'full', dtype: 'f32', backend: 'wasm-plain' });
    const simd = await createCache({ spec, policy: 'full', dtype: 'f32', backend: 'wasm' });
    expect(plain.backendInfo.description).toBe('wasm (plain)');
    const work = new NeedleWorkload(spec, { tokens: 40, seed: 9 });
    const prompt = work.prompt(0);
    plain.prefill(0, prompt);
    simd.prefill(0, prompt);
    const input = work.step(0);
    const a = plain.decode(0, input).data, b = simd.decode(0, input).data;
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    expect(worst).toBeLessThan(1e-5);
    expect(() => registerBackend('wasm', () => createWasmBackend({ variant: 'plain' }))).toThrow(/already registered/);
  });
});
