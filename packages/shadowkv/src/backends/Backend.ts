import type { DType } from '../tensor.js';
import type { Device } from './Device.js';

/**
 * A runtime that caches run on. `createDevice()` gives each cache its own instance (its own heap or
 * device allocations); `precision` is the relative tolerance of its outputs against a float64
 * oracle, per storage dtype, and is what tests read instead of literals.
 */
export interface Backend {
  readonly name: string;
  /** Human-readable build details, e.g. `wasm (simd)`. */
  readonly description: string;
  readonly precision: Readonly<Record<DType, number>>;
  createDevice(): Device;
}

/** Creates a backend; throws a typed error (`NoBinaryError`, `NoDeviceError`, `WasmInitError`) when it cannot start. */
export type BackendFactory = () => Promise<Backend>;

/** The backend `createCache` chose, and why. */
export interface BackendInfo {
  name: string;
  description: string;
  /** Why this backend: asked for by name, or which better ones `auto` skipped and their errors. */
  reason: string;
}
