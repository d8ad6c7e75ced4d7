import { NoBinaryError } from '../errors/NoBinaryError.js';
import type { Backend } from './Backend.js';

/** The optional native package; kept in a variable so bundlers leave the import to run time. */
const CUDA_PACKAGE = 'shadowkv-cuda';

/**
 * Loads the CUDA backend from the optional `shadowkv-cuda` package, which probes its addon in a
 * child process before trusting it. Without the package this throws `NoBinaryError`.
 */
export async function createCudaBackend(): Promise<Backend> {
  let mod: { createCudaBackend?: () => Promise<Backend> };
  try {
    mod = (await import(CUDA_PACKAGE)) as typeof mod;
  } catch (err) {
    throw new NoBinaryError(`the cuda backend needs the '${CUDA_PACKAGE}' package, which could not be loaded: ${(err as Error).message.split('\n')[0]}`);
  }
  if (typeof mod.createCudaBackend !== 'function') throw new NoBinaryError(`'${CUDA_PACKAGE}' does not export createCudaBackend()`);
  return mod.createCudaBackend();
}
