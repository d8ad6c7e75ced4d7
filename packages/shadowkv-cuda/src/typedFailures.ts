// CUDA's failures as the SDK's typed errors, in one place for every addon call (the cache's ops,
// the fused step, reads, events, memory queries) instead of at each call site.
import { CudaError } from '../../shadowkv/src/errors/CudaError.js';
import { OutOfMemoryError } from '../../shadowkv/src/errors/OutOfMemoryError.js';
import { CUDA_OUT_OF_MEMORY, CUDA_STICKY, type AddonError, type CudaAddon } from './AddonTypes.js';

/** The error a failed addon call throws: out of memory an OutOfMemoryError, any other CUDA error a CudaError; the rest as it was. */
export function typedFailure(err: unknown): unknown {
  const code = (err as AddonError | null)?.cudaCode;
  if (typeof code !== 'number') return err; // an argument the binding refused (a TypeError): a bug of ours, kept as is
  const message = (err as Error).message;
  if (code === CUDA_OUT_OF_MEMORY) return new OutOfMemoryError(`${message}; use a smaller batch or context`);
  const lost = CUDA_STICKY.has(code);
  return new CudaError(lost ? `${message}; the process's CUDA context is lost: no cache on this GPU can be used again, restart the process` : message, code, lost);
}

/** `addon` with every method's failures passed through `typedFailure` (each method wrapped once, on first use). */
export function typedFailures(addon: CudaAddon): CudaAddon {
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(addon, {
    get(target, name) {
      let method = wrapped.get(name);
      if (method === undefined) {
        const f: unknown = Reflect.get(target, name);
        if (typeof f !== 'function') return f;
        method = (...args: unknown[]) => {
          try {
            return (f as (...a: unknown[]) => unknown).apply(target, args);
          } catch (err) {
            throw typedFailure(err);
          }
        };
        wrapped.set(name, method);
      }
      return method;
    },
  });
}
