import { ShadowKVError } from './ShadowKVError.js';

/** The wasm runtime could not be found, compiled or instantiated. */
export class WasmInitError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_WASM_INIT', message);
  }
}
