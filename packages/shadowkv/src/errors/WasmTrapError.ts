import { ShadowKVError } from './ShadowKVError.js';

/**
 * The wasm runtime trapped inside an op for a reason other than memory (an out-of-bounds access,
 * unreachable code): a bug, not a full heap (that is an `OutOfMemoryError`). The message names the
 * op and the trap. What the op had written stays written: dispose the cache.
 */
export class WasmTrapError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_WASM_TRAP', message);
  }
}
