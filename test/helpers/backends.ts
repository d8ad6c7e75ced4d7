// Test backends built from the real ones: a backend's ops composed one by one instead of its fused
// step, and a wasm instance whose runtime calls are counted.
import {
  compileWasm, instantiateWasm, OutOfMemoryError, registerBackend, resolveBackend, WasmDevice, type Backend, type WasmExports,
} from '../../packages/shadowkv/src/backend.js';

/** Registers `'<base>-composed'`: the backend without `decodeLayer`, so caches run `decodeLayerComposed`. */
export function registerComposed(base: string): string {
  const name = `${base}-composed`;
  let factory = composedFactories.get(base);
  if (!factory) {
    factory = async (): Promise<Backend> => {
      const { backend } = await resolveBackend(base);
      return { ...backend, name, createDevice: () => Object.assign(backend.createDevice(), { decodeLayer: undefined }) };
    };
    composedFactories.set(base, factory);
  }
  registerBackend(name, factory, 0);
  return name;
}
const composedFactories = new Map<string, () => Promise<Backend>>();

/** Runtime calls made through a device, by export name. */
export type CallCounts = Map<string, number>;

/** Registers `'wasm-counted'`: every device's runtime exports counted into `calls`. */
export function registerCountedWasm(calls: CallCounts): string {
  registerBackend('wasm-counted', async () => {
    const module = await compileWasm();
    const { backend } = await resolveBackend('wasm');
    return { ...backend, name: 'wasm-counted', createDevice: () => new WasmDevice(counted(instantiateWasm(module), calls)) };
  }, 0);
  return 'wasm-counted';
}

function counted(x: WasmExports, calls: CallCounts): WasmExports {
  // NOTE: instance exports are frozen, so the counted ones are a plain copy, not a Proxy.
  const wrap = (name: string, fn: (...a: unknown[]) => unknown) => (...args: unknown[]) => {
    calls.set(name, (calls.get(name) ?? 0) + 1);
    return fn(...args);
  };
  return Object.fromEntries(Object.entries(x).map(([name, v]) => [name, typeof v === 'function' ? wrap(name, v as never) : v])) as unknown as WasmExports;
}

/** When set, the allocation a `'wasm-faulty'` device is asked for fails (as a full heap would). */
export const faults: { fail?: (tag: string, length: number) => boolean } = {};

/** Registers `'wasm-faulty'`: wasm whose allocations fail on demand (`faults.fail`), to test failures mid-call. */
export function registerFaultyWasm(): string {
  registerBackend('wasm-faulty', async () => {
    const { backend } = await resolveBackend('wasm');
    return {
      ...backend,
      name: 'wasm-faulty',
      createDevice: () => {
        const device = backend.createDevice();
        const alloc = device.alloc.bind(device);
        return Object.assign(device, {
          alloc: ((length, dtype, tag, tier) => {
            if (faults.fail?.(tag, length)) throw new OutOfMemoryError(`injected: no room for ${length} elements of ${tag}`);
            return alloc(length, dtype, tag, tier);
          }) as typeof device.alloc,
        });
      },
    };
  }, 0);
  return 'wasm-faulty';
}
