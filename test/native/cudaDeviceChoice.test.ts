import { describe, expect, it, vi } from 'vitest';
import { ConfigError } from '../../packages/shadowkv/src/errors/index.js';

// One CUDA device per process: the addon's current device, streams and step graphs are the
// process's, so a backend for a second device would move every cache already made onto it. The
// probe and the addon are stubs (two devices that pass the probe): no GPU needed.
const setDevice = vi.fn();
vi.mock('../../packages/shadowkv-cuda/src/loadAddon.js', async (importOriginal) => ({
  ...(await importOriginal<object>()),
  findAddon: () => '/stub/shadowkv_cuda.node',
  loadAddon: () => ({ setDevice }),
}));
vi.mock('../../packages/shadowkv-cuda/src/probeAddon.js', () => {
  const info = (i: number) => ({ name: `GPU ${i}`, major: 9, minor: 0, runtimeVersion: 13000, driverVersion: 13000 });
  return { probeAddon: async () => ({ stage: 'ok', count: 2, devices: [info(0), info(1)] }) };
});
const { createCudaBackend } = await import('../../packages/shadowkv-cuda/src/index.js');

describe('createCudaBackend picks one device per process (stub addon)', () => {
  it('takes the first device, again and again, and refuses another with a ConfigError that names both', async () => {
    await createCudaBackend({ device: 1 });
    expect(setDevice.mock.calls).toEqual([[1]]);
    await createCudaBackend({ device: 1 });
    const err = await createCudaBackend({ device: 0 }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe('SKV_CONFIG');
    expect((err as Error).message).toMatch(/runs on CUDA device 1; device 0 needs a process of its own/);
    await expect(createCudaBackend()).rejects.toThrow(ConfigError); // the default, device 0, too
    expect(setDevice.mock.calls).toEqual([[1], [1]]); // the refused calls changed nothing
  });

  it('refuses the second of two calls started together for different devices', async () => {
    const results = await Promise.allSettled([createCudaBackend({ device: 1 }), createCudaBackend({ device: 0 })]);
    expect(results[0].status).toBe('fulfilled');
    expect(results[1].status === 'rejected' && results[1].reason).toBeInstanceOf(ConfigError);
  });
});

describe('createCudaBackend options (stub addon)', () => {
  it('a bad device or hostMemory, or an unknown key, is a ConfigError before anything is probed, naming the value as given', async () => {
    setDevice.mockClear();
    const cases: [unknown, RegExp][] = [
      [{ device: -1 }, /device must be an integer in \[0, 2147483647\] \(a CUDA device ordinal\), got -1/],
      [{ device: 2 ** 40 }, /device must be an integer in \[0, 2147483647\].*, got 1099511627776/],
      [{ hostMemory: 2 ** 60 }, /hostMemory must be an integer in \[0, 9007199254740991\] \(bytes; 2\^53 - 1 is as many as a number holds exactly\), got 1152921504606847000/],
      [{ device: 1.5 }, /got 1.5/],
      [{ device: Number.NaN }, /got NaN/],
      [{ device: '0' }, /got "0"/],
      [{ device: Infinity }, /got Infinity/],
      [{ hostMemory: -1 }, /hostMemory must be an integer in \[0, 9007199254740991\].*, got -1/],
      [{ hostMemory: Number.NaN }, /got NaN/],
      [{ devcie: 1 }, /unknown option 'devcie'; known: device, hostMemory/],
      [null, /must be an object/],
    ];
    for (const [options, message] of cases) {
      const err = await createCudaBackend(options as never).then(() => undefined, (e: unknown) => e);
      expect(err, JSON.stringify(options)).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toMatch(message);
    }
    expect(setDevice).not.toHaveBeenCalled();
  });
});
