import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { at, createCache, NoDeviceError } from '../../packages/shadowkv/src/backend.js';
import { addonCandidates, createCudaBackend, probeAddon } from '../../packages/shadowkv-cuda/src/index.js';
import { loadAddon } from '../../packages/shadowkv-cuda/src/loadAddon.js';
import type { AddonError } from '../../packages/shadowkv-cuda/src/AddonTypes.js';

// The CUDA addon as a machine without a GPU sees it: it loads (static cudart, no libcuda link),
// the probe child answers instead of crashing, and every entry point says why CUDA is unavailable.
// On a GPU machine the same file checks that the backend starts and moves bytes both ways.
// Builds nothing: `bash scripts/build-cuda.sh` makes the binary.
const built = addonCandidates().find((c) => existsSync(c.path));
const probe = built ? await probeAddon(built.path) : undefined;
const gpu = probe?.stage === 'ok' && (probe.count ?? 0) > 0;
const NO_CUDA = [35, 100, 209]; // no driver / too old, no device, no kernel image for the GPU

const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };

if (!built) {
  describe.skip('shadowkv-cuda addon skipped: the shadowkv-cuda addon is not built', () => {
    it('probe', () => {});
  });
} else {
  describe('shadowkv-cuda addon', () => {
    it('the probe child answers (no crash, no hang) with the devices or a CUDA error code', () => {
      expect(['ok', 'deviceCount']).toContain(probe!.stage);
      if (probe!.stage !== 'ok') expect(NO_CUDA).toContain(probe!.cudaCode);
    });

    it.skipIf(gpu)('loaded in this process, deviceCount() throws a coded error instead of crashing', () => {
      const addon = loadAddon(built.path);
      expect(addon.napiVersion).toBe(8);
      let err: AddonError | undefined;
      try {
        addon.deviceCount();
      } catch (e) {
        err = e as AddonError;
      }
      expect(err?.op).toBe('deviceCount');
      expect(NO_CUDA).toContain(err?.cudaCode);
      expect(err?.message).toMatch(/^deviceCount: cudaError\w+ \(\d+\)/);
    });

    it.skipIf(gpu)('createCudaBackend() is a NoDeviceError that says why', async () => {
      const err = await createCudaBackend().then(() => undefined, (e: unknown) => e as Error);
      expect(err).toBeInstanceOf(NoDeviceError);
      expect(err?.message).toMatch(/^shadowkv-cuda: no CUDA device: (the NVIDIA driver is missing|the driver finds no CUDA-capable GPU)/);
    });

    it.skipIf(gpu)("backend 'auto' falls back to wasm and keeps the reason", async () => {
      const cache = await createCache({ spec, policy: 'full' });
      expect(cache.backendInfo.name).toBe('wasm');
      expect(cache.backendInfo.reason).toMatch(/cuda unavailable \(shadowkv-cuda: no CUDA device/);
      cache.dispose();
    });

    const onGpu = 'on a GPU: the backend starts, names the device, and round-trips both tiers';
    it.runIf(gpu)(gpu ? onGpu : `${onGpu} skipped: no CUDA device`, async () => {
      const backend = await createCudaBackend();
      expect(backend.name).toBe('cuda');
      expect(backend.description).toMatch(/^cuda \(.+, sm_\d+, CUDA \d+\.\d+/);
      const device = backend.createDevice();
      const data = Float32Array.from({ length: 1000 }, (_, i) => i - 500.25);
      for (const tier of ['device', 'host'] as const) {
        const buf = device.alloc(data.length, 'f32', 'test', tier);
        device.write(at(buf), data);
        expect(Array.from(device.read(at(buf) as never, data.length) as Float32Array)).toEqual(Array.from(data));
        device.free(buf);
      }
      expect(device.memory()).toMatchObject({ device: 0, host: 0 });
      device.dispose();
    });
  });
}
