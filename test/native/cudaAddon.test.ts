import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { at, createCache, NoDeviceError } from '../../packages/shadowkv/src/backend.js';
import { addonCandidates, createCudaBackend, findAddon, probeAddon } from '../../packages/shadowkv-cuda/src/index.js';
import { loadAddon } from '../../packages/shadowkv-cuda/src/loadAddon.js';
import { DTYPE_CODE, type AddonError } from '../../packages/shadowkv-cuda/src/AddonTypes.js';
import { f32ToBf16, f32ToF16 } from '../../packages/shadowkv/src/dtype.js';
import { checkValues, valueLimit, type ValueRole } from '../../packages/shadowkv/src/policies/validate.js';
import type { DType, Tensor } from '../../packages/shadowkv/src/tensor.js';
import { rng } from '../helpers/data.js';

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

    // Needs no GPU: the host-array scan is C++ on the CPU (every decode step's inputs on cuda take it).
    it('checkFiniteHost finds the first bad element as the JS scan does, every dtype, at block edges', () => {
      const addon = loadAddon(built.path);
      const n = 9000; // three scan blocks of 4096, the last partial
      const MAX = { f32: 3.4028234663852886e38, f16: 65504, bf16: 3.3895313892515355e38 };
      const cases: [DType, DType | undefined, ValueRole, number][] = [
        ['f32', undefined, 'input', NaN], ['f32', 'bf16', 'key', -Infinity], ['f32', 'f16', 'key', 5e4],
        ['bf16', undefined, 'input', NaN], ['bf16', 'bf16', 'key', -Infinity], ['bf16', 'bf16', 'key', 3e38],
        ['f16', undefined, 'input', NaN], ['f16', 'f16', 'key', -5e4], ['f16', 'f16', 'value', Infinity],
      ];
      for (const [dtype, storage, role, bad] of cases) {
        const limit = Math.min(valueLimit(storage, role), MAX[dtype]);
        const good = (i: number) => Math.sin(i) * 1e4;
        const what = `${dtype} data, ${storage ?? 'no'} storage, ${role}, ${bad}`;
        expect(addon.checkFiniteHost(toData(dtype, good), DTYPE_CODE[dtype], limit), `${what}: clean`).toBe(-1);
        for (const at of [0, 4095, 4096, 8191, n - 1]) {
          const poisoned = toData(dtype, (i) => (i === at || i === n - 1 ? bad : good(i)));
          expect(addon.checkFiniteHost(poisoned, DTYPE_CODE[dtype], limit), `${what} at ${at}`).toBe(at);
          // The JS scan (a device without findNonFiniteHost) names the same element.
          expect(() => checkValues('t', 'x', { data: poisoned, shape: [n], dtype }, storage, role, {})).toThrow(new RegExp(`x\\[${at}\\]`));
        }
      }
      // Limits the SDK never passes, as the JS scan reads them: 16-bit data is range-checked only
      // below the dtype's largest value (not for NaN), after its NaN/Inf pass.
      const nanAt5 = Uint16Array.from({ length: 16 }, (_, i) => f32ToBf16(i === 5 ? NaN : 1));
      expect(addon.checkFiniteHost(nanAt5, DTYPE_CODE.bf16, -1)).toBe(5);
      expect(addon.checkFiniteHost(nanAt5.map(() => f32ToBf16(1)), DTYPE_CODE.bf16, -1)).toBe(0);
      expect(addon.checkFiniteHost(nanAt5.map(() => f32ToBf16(1)), DTYPE_CODE.bf16, NaN)).toBe(-1);
      expect(addon.checkFiniteHost(nanAt5, DTYPE_CODE.bf16, NaN)).toBe(5);
      expect(() => addon.checkFiniteHost(new Uint16Array(4), DTYPE_CODE.f32, 1)).toThrow(TypeError);
      expect(() => addon.checkFiniteHost(new Float32Array(4), DTYPE_CODE.bf16, 1)).toThrow(TypeError);

      function toData(dtype: DType, f: (i: number) => number): Float32Array | Uint16Array {
        const x = Float32Array.from({ length: n }, (_, i) => f(i));
        return dtype === 'f32' ? x : Uint16Array.from(x, (v) => (dtype === 'f16' ? f32ToF16 : f32ToBf16)(v));
      }
    });

    // The class, generated: any dtype, storage and role, any length, values at and around the limit.
    it('checkFiniteHost agrees with the JS scan on 400 generated arrays (lengths 1-9000, values at the limits)', () => {
      const addon = loadAddon(built.path);
      const rand = rng(7);
      const pick = <T,>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)]!;
      const MAX = { f32: 3.4028234663852886e38, f16: 65504, bf16: 3.3895313892515355e38 };
      const jsFirst = (t: Tensor, storage: DType | undefined, role: ValueRole) => {
        try {
          checkValues('t', 'x', t, storage, role, {});
          return -1;
        } catch (e) {
          return Number(/x\[(\d+)\]/.exec((e as Error).message)![1]);
        }
      };
      const found = [0, 0]; // clean arrays, arrays with a bad element
      for (let trial = 0; trial < 400; trial++) {
        const dtype = pick(['f32', 'f16', 'bf16'] as const);
        const storage = pick([undefined, 'f32', 'f16', 'bf16'] as const);
        const role = pick(['key', 'value', 'input'] as const);
        const limit = Math.min(valueLimit(storage, role), MAX[dtype]);
        const n = 1 + Math.floor(rand() * rand() * 9000);
        // Mostly ordinary values; some right at, just under and just over the limit, or non-finite.
        const edge = () => pick([limit, limit * (1 - 2 ** -12), limit * (1 + 2 ** -12), MAX[dtype], NaN, Infinity]) * pick([1, -1]);
        const bad = rand() < 0.3 ? 0 : 1 + Math.floor(rand() * 3);
        const at = new Set(Array.from({ length: bad }, () => Math.floor(rand() * n)));
        const x = Float32Array.from({ length: n }, (_, i) => (at.has(i) ? edge() : (rand() - 0.5) * 100));
        const data = dtype === 'f32' ? x : Uint16Array.from(x, (v) => (dtype === 'f16' ? f32ToF16 : f32ToBf16)(v));
        const t: Tensor = { data, shape: [n], dtype };
        const first = jsFirst(t, storage, role);
        expect(addon.checkFiniteHost(data, DTYPE_CODE[dtype], limit), `trial ${trial}: ${n} ${dtype}, ${storage ?? 'no'} storage, ${role}`).toBe(first);
        found[first < 0 ? 0 : 1]! += 1;
      }
      // Both outcomes came up often: the generator reaches past the limits and stays within them.
      expect(Math.min(...found)).toBeGreaterThan(80);
    });

    // A prompt's arrays (millions of elements) are scanned in one range per host thread and, for
    // 16-bit floats, in one integer pass: the first bad element must still be the JS scan's, also
    // where an out-of-range element in an early range precedes a NaN in a late one.
    it('checkFiniteHost on arrays past 4M elements (scanned on several threads) agrees with the JS scan', () => {
      const addon = loadAddon(built.path);
      const n = (1 << 22) * 1.25 + 3;
      const bits = { f32: (v: number) => v, f16: f32ToF16, bf16: f32ToBf16 };
      for (const dtype of ['f32', 'f16', 'bf16'] as const) {
        const limit = Math.min(valueLimit(dtype, 'key'), dtype === 'f16' ? 65504 : 3.3895313892515355e38);
        const over = dtype === 'f16' ? 60000 : 3e38; // finite, beyond a key's limit
        const make = (bad: [number, number][]) => {
          const data = dtype === 'f32' ? new Float32Array(n).fill(1.5) : new Uint16Array(n).fill(bits[dtype](1.5));
          for (const [i, v] of bad) data[i] = bits[dtype](v);
          return data;
        };
        const cases: [number, number][][] = [
          [],
          ...[0, Math.floor(n / 8) - 1, Math.floor(n / 8), Math.floor(n / 2), n - 1].map((i) => [[i, NaN]] as [number, number][]),
          // The edges of the host threads' ranges (check_finite.cc: ceil(n / threads) each, 2-8
          // threads), with a later NaN that a range after the first bad one finds too.
          ...[2, 4, 8].flatMap((threads) => Array.from({ length: threads - 1 }, (_, k) => Math.ceil(n / threads) * (k + 1)))
            .flatMap((e) => [e - 1, e]).map((i) => [[i, NaN], [n - 1, NaN]] as [number, number][]),
          [[7, over], [n - 5, NaN]], // out of range first, a NaN last: the NaN, for 16-bit data
          [[n - 9, over]],
          [[Math.floor(n / 3), -Infinity], [n - 2, over]],
        ];
        for (const bad of cases) {
          const data = make(bad);
          const t: Tensor = { data, shape: [n], dtype };
          let js = -1;
          try {
            checkValues('t', 'x', t, dtype, 'key', {});
          } catch (e) {
            js = Number(/x\[(\d+)\]/.exec((e as Error).message)![1]);
          }
          expect(addon.checkFiniteHost(data, DTYPE_CODE[dtype], limit), `${dtype}, bad ${JSON.stringify(bad)}`).toBe(js);
          if (bad.length) expect(js).toBeGreaterThanOrEqual(0);
        }
      }
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

    const pieces = 'writes up to 8 MiB go up staged in 1 MiB pieces without waiting and arrive whole; larger ones are one synchronous copy';
    it.runIf(gpu)(gpu ? pieces : `${pieces} skipped: no CUDA device`, async () => {
      const device = (await createCudaBackend()).createDevice();
      const addon = loadAddon(findAddon()); // the module the backend loaded: one process, one counter
      const MiB = 2 ** 20;
      for (const bytes of [MiB / 2, MiB, MiB + 4, 3 * MiB + 12, 8 * MiB, 8 * MiB + 4]) {
        const data = Float32Array.from({ length: bytes / 4 }, (_, i) => (i % 1021) - 510.5 + i / 4096);
        const buf = device.alloc(data.length, 'f32', 'test');
        const before = addon.memoryStats().syncCopies;
        device.write(at(buf), data);
        expect(addon.memoryStats().syncCopies - before, `${bytes} bytes`).toBe(bytes > 8 * MiB ? 1 : 0);
        const back = device.read(at(buf) as never, data.length) as Float32Array;
        expect(Buffer.from(back.buffer, back.byteOffset, back.byteLength).equals(Buffer.from(data.buffer)), `${bytes} bytes`).toBe(true);
        device.free(buf);
      }
      device.dispose();
    });
  });
}
