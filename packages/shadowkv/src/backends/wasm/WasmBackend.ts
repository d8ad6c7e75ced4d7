import type { Backend } from '../Backend.js';
import { compileWasm, compileWasmSync, hasWasmSimd, instantiateWasm, type WasmModule, type WasmVariant } from './loadWasm.js';
import { WasmDevice } from './WasmDevice.js';

/** Options of the wasm backend. */
export interface WasmBackendOptions {
  /**
   * Which build to load.
   * - `'simd'` (default where supported): hand-written SIMD128 kernels
   * - `'plain'`: scalar fallback for engines without wasm SIMD
   */
  variant?: WasmVariant;
  /**
   * The `.wasm` bytes, for hosts that cannot read the bundled file (browsers fetch it themselves): a
   * Uint8Array (any view) or an ArrayBuffer. Anything else, a detached buffer or bytes that are not
   * the runtime is a `WasmInitError` that says which.
   */
  wasmBinary?: Uint8Array | ArrayBuffer;
}

/**
 * The CPU reference backend: C++ ops compiled to wasm, one instance (own heap) per cache.
 * Output tolerance against a float64 oracle: ~1e-5 relative with f32 storage.
 */
export async function createWasmBackend(options: WasmBackendOptions = {}): Promise<Backend> {
  const variant = options.variant ?? (hasWasmSimd() ? 'simd' : 'plain');
  return wasmBackend(variant, await compileWasm(variant, options.wasmBinary));
}

/** The wasm backend compiled synchronously (Node), for caches constructed before `ready()`; undefined where it cannot be. */
export function createWasmBackendSync(): Backend | undefined {
  const variant = hasWasmSimd() ? 'simd' : 'plain';
  const module = compileWasmSync(variant);
  return module && wasmBackend(variant, module);
}

function wasmBackend(variant: WasmVariant, module: WasmModule): Backend {
  return {
    name: 'wasm',
    description: `wasm (${variant})`,
    precision: { f32: 1e-5, f16: 4e-3, bf16: 3e-2 },
    createDevice: () => new WasmDevice(instantiateWasm(module)),
  };
}
