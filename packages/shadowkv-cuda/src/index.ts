/**
 * shadowkv-cuda: the CUDA runtime of shadowkv. The SDK loads it by name (`backend: 'cuda'`, or
 * `'auto'` when it starts); it is rarely imported directly.
 * @packageDocumentation
 */
import type { Backend } from '../../shadowkv/src/backends/Backend.js';
import { checkKeys } from '../../shadowkv/src/config.js';
import { ConfigError } from '../../shadowkv/src/errors/ConfigError.js';
import { fmt } from '../../shadowkv/src/policies/validate.js';
import { NoBinaryError } from '../../shadowkv/src/errors/NoBinaryError.js';
import { NoDeviceError } from '../../shadowkv/src/errors/NoDeviceError.js';
import { CUDA_NO_DEVICE, type CudaDeviceInfo } from './AddonTypes.js';
import { CudaDevice } from './CudaDevice.js';
import { checkCudaEnv, envDevice } from './cudaEnv.js';
import { findAddon, loadAddon } from './loadAddon.js';
import { probeAddon, type ProbeResult } from './probeAddon.js';

export type { AddonMemoryStats, CudaAddon, CudaDeviceInfo } from './AddonTypes.js';
export { CudaDevice } from './CudaDevice.js';
export { CUDA_ENV } from './cudaEnv.js';
export { isCudaTensor, type CudaTensor } from './CudaTensor.js';
export { ADDON_ENV, addonCandidates, findAddon } from './loadAddon.js';
export { probeAddon, type ProbeResult } from './probeAddon.js';

/** Options of the CUDA backend. */
export interface CudaBackendOptions {
  /**
   * CUDA device ordinal (default: `SHADOWKV_CUDA_DEVICE` where set, else 0). Every cache of this process runs on it: a backend for another
   * device in the same process is a `ConfigError` (use a process per GPU).
   */
  device?: number;
  /**
   * Bytes of pinned host memory (the offloaded values) this process's caches may hold; creating a
   * cache whose values would pass it is an `OutOfMemoryError`.
   * - default: no limit but the memory the OS reports available (`os.freemem()`)
   */
  hostMemory?: number;
}

/**
 * Starts the CUDA backend: finds the addon binary, probes it in a child process (a crash or a
 * missing driver costs the child), then loads it here and selects the device.
 * Throws `ConfigError` for an option, or a variable of `CUDA_ENV` (`SHADOWKV_CUDA_SYNC`, ...), it
 * does not take; `NoBinaryError` when no binary is found (or `SHADOWKV_CUDA_ADDON` names none) or it
 * cannot load, `NoDeviceError` when CUDA finds
 * no usable device (no driver: CUDA error 35; no device: 100; no kernels for this GPU: 209).
 * Output tolerance against a float64 oracle is that of the wasm backend (f32 arithmetic).
 * @example
 * import { createCudaBackend } from 'shadowkv-cuda';
 * const cuda = await createCudaBackend({ device: 0 });
 * console.log(cuda.description); // e.g. "cuda (NVIDIA H200, sm_90, CUDA 13.0)"
 */
export async function createCudaBackend(options: CudaBackendOptions = {}): Promise<Backend> {
  checkKeys('createCudaBackend options', options, ['device', 'hostMemory']);
  if (options.device != null) intOption('device', options.device, INT32_MAX, 'a CUDA device ordinal');
  const fromEnv = options.device == null ? envDevice() : undefined;
  const ordinal = options.device ?? fromEnv ?? 0;
  const asked = fromEnv === undefined ? `device ${ordinal}` : `device ${ordinal} (SHADOWKV_CUDA_DEVICE)`;
  const { hostMemory } = options;
  if (hostMemory !== undefined) intOption('hostMemory', hostMemory, Number.MAX_SAFE_INTEGER, 'bytes; 2^53 - 1 is as many as a number holds exactly');
  // NOTE: the addon's current device, its streams and its step graphs are per process: a second
  // device would move every cache already made onto it.
  const taken = () => {
    if (chosen !== undefined && chosen !== ordinal) throw new ConfigError(`createCudaBackend: this process runs on CUDA device ${chosen}; ${asked} needs a process of its own (one device per process)`);
  };
  taken();
  checkCudaEnv();
  const path = findAddon();
  const probe = await probeAddon(path, ordinal);
  const info = checkProbe(probe, ordinal, asked, path);
  taken(); // another call may have chosen while this one probed
  const addon = loadAddon(path);
  addon.setDevice(ordinal);
  chosen = ordinal;
  return {
    name: 'cuda',
    description: `cuda (${info.name}, sm_${info.major}${info.minor}, CUDA ${version(info.runtimeVersion)}, driver ${version(info.driverVersion)})`,
    precision: { f32: 1e-5, f16: 4e-3, bf16: 3e-2 },
    createDevice: () => new CudaDevice(addon, ordinal, hostMemory),
  };
}

const INT32_MAX = 2 ** 31 - 1;

/** Throws a ConfigError unless option `name` is an integer in [0, max]; the message states the range. */
function intOption(name: string, value: unknown, max: number, unit: string): void {
  if (!(Number.isInteger(value) && (value as number) >= 0 && (value as number) <= max)) {
    throw new ConfigError(`createCudaBackend: ${name} must be an integer in [0, ${max}] (${unit}), got ${fmt(value)}`);
  }
}

/** The device this process's backends run on, once one has started. */
let chosen: number | undefined;

/** 13000 -> "13.0". */
const version = (v: number) => `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;

/** The chosen device's properties, or the typed error that says why CUDA cannot run. */
function checkProbe(p: ProbeResult, ordinal: number, asked: string, path: string): CudaDeviceInfo {
  if (p.stage === 'load' || p.stage === 'crash' || p.stage === 'spawn') {
    throw new NoBinaryError(`shadowkv-cuda: ${path} failed in the probe process (${p.stage}): ${p.message}. Rebuild it with \`bash scripts/build-cuda.sh\``);
  }
  if (p.stage === 'timeout') throw new NoDeviceError(`shadowkv-cuda: CUDA did not start: ${p.message} (a hung driver?)`);
  if (p.stage !== 'ok') throw new NoDeviceError(`shadowkv-cuda: ${why(p.cudaCode)} (${p.message})`);
  const count = p.count ?? 0;
  if (count === 0) throw new NoDeviceError('shadowkv-cuda: no CUDA device (the driver reports 0 devices)');
  const info = p.devices?.[ordinal];
  if (!info) throw new NoDeviceError(`shadowkv-cuda: ${asked} was asked for, but there ${count === 1 ? 'is 1 device' : `are ${count} devices`}`);
  return info;
}

/** What a CUDA error from the probe means for the user. */
function why(cudaCode: number | undefined): string {
  switch (cudaCode) {
    case CUDA_NO_DEVICE.insufficientDriver:
      return 'no CUDA device: the NVIDIA driver is missing or older than this build of the CUDA runtime needs';
    case CUDA_NO_DEVICE.noDevice:
      return 'no CUDA device: the driver finds no CUDA-capable GPU';
    case CUDA_NO_DEVICE.noKernelImage:
      return 'no CUDA device this build can run on: the addon has no kernels for this GPU; rebuild it with its architecture in CMAKE_CUDA_ARCHITECTURES';
    default:
      return `CUDA is unavailable (CUDA error ${cudaCode ?? 'unknown'})`;
  }
}
