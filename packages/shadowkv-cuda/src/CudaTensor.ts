import { DeviceTensor } from '../../shadowkv/src/DeviceTensor.js';

/**
 * A device tensor of the CUDA backend: GPU memory, `address` its device pointer. Made by a CUDA
 * cache (`cache.allocTensor(shape, dtype)`), wrapping a pointer the host loop owns
 * (`cache.wrapTensor(ptr, shape, dtype)`: never freed by the SDK), or returned by `decode` when its
 * inputs are device tensors. Every cache of the process on the same GPU can read it.
 * @example
 * const q = cache.wrapTensor(myQueryPtr, [1, 32, 1, 128], 'bf16'); // memory of the host loop
 * const out = cache.decode(0, { query: q, key: k, value: v });   // out.address: the attention output on the GPU
 */
export type CudaTensor = DeviceTensor & { readonly backend: 'cuda' };

/** Whether `t` is a live tensor in CUDA memory. */
export function isCudaTensor(t: unknown): t is CudaTensor {
  return t instanceof DeviceTensor && t.backend === 'cuda' && !t.disposed;
}
