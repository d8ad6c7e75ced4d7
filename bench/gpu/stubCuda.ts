// The CUDA backend over a stub addon, for timing the JavaScript of CudaDevice and the policies on
// any machine (bench/gpu/host.ts, bench/gpu/compressHost.ts): addresses from a bump allocator, the
// free memory large, no non-finite input, every other native call a no-op returning 0. Buffers it
// "allocates" hold nothing; its kernels run nothing.
import { registerBackend, resolveBackend, type Backend } from '../../packages/shadowkv/src/backend.js';
import { CudaDevice } from '../../packages/shadowkv-cuda/src/CudaDevice.js';
import type { CudaAddon } from '../../packages/shadowkv-cuda/src/AddonTypes.js';

/** Registers the backend `'cuda-stub'` (wasm's description, a CudaDevice over the stub) and returns its name. */
export function registerStubCuda(): string {
  let next = 1 << 20;
  const stub = new Proxy({} as CudaAddon, {
    get(_t, name) {
      if (name === 'then') return undefined;
      if (name === 'memInfo') return () => ({ free: 2 ** 44, total: 2 ** 44 });
      if (name === 'malloc' || name === 'hostAlloc') return (bytes: number) => ((next += Math.ceil(bytes / 256) * 256 + 256), next);
      if (name === 'checkFiniteHost') return () => -1;
      if (name === 'memoryStats') return () => ({ syncCopies: 0, workspaceBytes: 0, stagingBytes: 0 });
      return () => 0;
    },
  });
  registerBackend('cuda-stub', async (): Promise<Backend> => {
    const { backend } = await resolveBackend('wasm');
    return { ...backend, name: 'cuda-stub', createDevice: () => new CudaDevice(stub, 0) };
  }, 0);
  return 'cuda-stub';
}
