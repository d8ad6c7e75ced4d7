import { ShadowKVError } from './ShadowKVError.js';

/**
 * A CUDA call of the `cuda` backend failed for a reason other than memory (that is an
 * `OutOfMemoryError`). The message names the op and CUDA's error. Where `contextLost` is true (a fault
 * inside a kernel: an illegal address, a launch failure), CUDA refuses every later call in this
 * process: no cache on that GPU can be used again, so save nothing from it and restart the process.
 */
export class CudaError extends ShadowKVError {
  /** @internal */
  constructor(
    message: string,
    /** CUDA's error number (`cudaError_t`). */
    readonly cudaCode: number,
    /** Whether the error is sticky: the process's CUDA context is unusable from here on. */
    readonly contextLost: boolean,
  ) {
    super('SKV_CUDA', message);
  }
}
