import { afterEach, describe, expect, it, vi } from 'vitest';
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

describe('SHADOWKV_CUDA_DEVICE: the device when no `device` option is given (stub addon)', () => {
  afterEach(() => delete process.env.SHADOWKV_CUDA_DEVICE);
  const rejection = (options?: object) => createCudaBackend(options).then(() => undefined, (e: unknown) => e as Error);

  it('picks the device; an explicit option wins over it; the refusal names the variable', async () => {
    setDevice.mockClear();
    process.env.SHADOWKV_CUDA_DEVICE = '1'; // the device this file's first test chose
    await createCudaBackend();
    expect(setDevice.mock.calls).toEqual([[1]]);
    process.env.SHADOWKV_CUDA_DEVICE = '0';
    await createCudaBackend({ device: 1 });
    expect(setDevice.mock.calls).toEqual([[1], [1]]);
    const err = await rejection();
    expect(err).toBeInstanceOf(ConfigError);
    expect(err?.message).toMatch(/runs on CUDA device 1; device 0 \(SHADOWKV_CUDA_DEVICE\) needs a process of its own/);
    expect(setDevice.mock.calls).toHaveLength(2);
  });

  it.each(['-1', '1.5', 'one', ' 1', '2147483648'])('SHADOWKV_CUDA_DEVICE=%j is a ConfigError naming it, before anything is probed', async (value) => {
    setDevice.mockClear();
    process.env.SHADOWKV_CUDA_DEVICE = value;
    const err = await rejection();
    expect(err).toBeInstanceOf(ConfigError);
    expect(err?.message).toContain(`SHADOWKV_CUDA_DEVICE must be a CUDA device ordinal in [0, 2147483647]`);
    expect(err?.message).toContain(`got ${JSON.stringify(value)}; unset it for the default`);
    expect(await rejection({ device: 1 })).toBeInstanceOf(ConfigError); // checked with every variable, even where the option wins
    expect(setDevice).not.toHaveBeenCalled();
  });
});
