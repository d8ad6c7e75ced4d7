// Test backends built from the real ones: a backend's ops composed one by one instead of its fused
// step, a wasm instance whose runtime calls are counted, one whose allocations fail on demand, one
// that reports little room left, and any backend whose devices are recorded.
import {
  compileWasm, instantiateWasm, OutOfMemoryError, registerBackend, resolveBackend, WasmDevice, type Backend, type Device, type DeviceMemory,
  type DeviceRoom, type WasmExports,
} from '../../packages/shadowkv/src/backend.js';

const derived = new Map<string, () => Promise<Backend>>();

/**
 * Registers `name`: the backend `base` with every device it makes passed through `adapt`. One
 * factory per name, so a suite may ask again (a name cannot be registered by two factories).
 */
function registerDerived(name: string, base: string, adapt: (device: Device) => Device): string {
  let factory = derived.get(name);
  if (!factory) {
    factory = async (): Promise<Backend> => {
      const { backend } = await resolveBackend(base);
      return { ...backend, name, createDevice: () => adapt(backend.createDevice()) };
    };
    derived.set(name, factory);
  }
  registerBackend(name, factory, 0);
  return name;
}

/** The device with `before(tag, length)` run ahead of each of its allocations. */
function onAlloc(device: Device, before: (tag: string, length: number) => void): Device {
  const alloc = device.alloc.bind(device);
  return Object.assign(device, {
    alloc: ((length, dtype, tag, tier) => {
      before(tag, length);
      return alloc(length, dtype, tag, tier);
    }) as typeof device.alloc,
  });
}

/** Registers `'<base>-composed'`: the backend without `decodeLayer`, so caches run `decodeLayerComposed`. */
export function registerComposed(base: string): string {
  return registerDerived(`${base}-composed`, base, (device) => Object.assign(device, { decodeLayer: undefined }));
}

/** Registers `'<base>-no-fp8'`: the backend's devices without `quantizeValues`, as a backend with no fp8 host tier. */
export function registerWithoutFp8(base: string): string {
  return registerDerived(`${base}-no-fp8`, base, (device) => Object.assign(device, { quantizeValues: undefined }));
}

/** Registers `'<base>-no-pack'`: the backend's devices without `packValues`, as a backend with no packed host tier. */
export function registerWithoutPack(base: string): string {
  return registerDerived(`${base}-no-pack`, base, (device) => Object.assign(device, { packValues: undefined }));
}

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
  return registerDerived('wasm-faulty', 'wasm', (device) =>
    onAlloc(device, (tag, length) => {
      if (faults.fail?.(tag, length)) throw new OutOfMemoryError(`injected: no room for ${length} elements of ${tag}`);
    }),
  );
}

/**
 * Registers `'wasm-<bytes>'`: wasm scaled down to one pool of `bytes` (its `maxBytes`, which the
 * creation check reads), whose allocations past it fail as a full heap's would.
 */
export function registerPoolWasm(bytes: number): string {
  return registerDerived(`wasm-${bytes}`, 'wasm', (device) =>
    Object.assign(
      onAlloc(device, (tag, length) => {
        const held = device.memory();
        // NOTE: f32-sized elements bound every dtype the tests allocate here (16-bit ones use less).
        if (held.device + held.host + 4 * length > bytes) throw new OutOfMemoryError(`injected: ${tag} past the pool's ${bytes} bytes`);
      }),
      { maxBytes: bytes },
    ),
  );
}

/** What `registerRecorded` saw of each device a cache made: the device, and `memory()` just before its `dispose()`. */
export interface RecordedDevice {
  device: Device;
  /** The device's memory when the cache handed it back (after the cache freed what it holds itself). */
  atDispose?: DeviceMemory;
}

const recorders = new Map<string, RecordedDevice[]>();

/**
 * Registers `'<base>-recorded'`: the backend `base` whose devices are recorded (newest last), with
 * their memory at `dispose()` (what the cache left for the device's own sweep). Returns the name and the list.
 */
export function registerRecorded(base: string): { name: string; devices: RecordedDevice[] } {
  const name = `${base}-recorded`;
  let devices = recorders.get(name);
  if (!devices) {
    const list: RecordedDevice[] = (devices = []);
    recorders.set(name, list);
    registerDerived(name, base, (device) => {
      const entry: RecordedDevice = { device };
      const dispose = device.dispose.bind(device);
      device.dispose = () => {
        entry.atDispose ??= device.memory();
        dispose();
      };
      list.push(entry);
      return device;
    });
  }
  return { name, devices };
}

/** Tags of the allocations `'wasm-small'` devices were asked for, in order. */
export const smallAllocations: string[] = [];
/** The room `'wasm-small'` devices report (a GPU with little free memory, say); set it before creating a cache. */
export const smallRoom: { room: DeviceRoom } = { room: { device: 0, host: 0, source: 'a test device' } };

/** Registers `'wasm-small'`: wasm whose devices report `smallRoom.room` as what is left, and record every allocation's tag. */
export function registerSmallWasm(): string {
  return registerDerived('wasm-small', 'wasm', (device) =>
    Object.assign(onAlloc(device, (tag) => smallAllocations.push(tag)), { room: () => ({ ...smallRoom.room }) }),
  );
}

/** Tags of the host-tier allocations `'wasm-pinning'` devices made, in order. */
export const hostAllocations: string[] = [];

/** Registers `'wasm-pinning'`: wasm that says its host tier is slow to allocate, as CUDA's pinned memory is, and records each host-tier allocation. */
export function registerPinningWasm(): string {
  return registerDerived('wasm-pinning', 'wasm', (device) => {
    const alloc = device.alloc.bind(device);
    return Object.assign(device, {
      pinsHost: true,
      alloc: ((length, dtype, tag, tier) => {
        if (tier === 'host') hostAllocations.push(tag);
        return alloc(length, dtype, tag, tier);
      }) as typeof device.alloc,
    });
  });
}
