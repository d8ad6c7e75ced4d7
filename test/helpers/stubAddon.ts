// A CUDA addon with no GPU behind it, for the CudaDevice logic that runs before or around a kernel.
import { FullKVCache, type ModelSpec } from '../../packages/shadowkv/src/backend.js';
import { CudaDevice, type CudaAddon } from '../../packages/shadowkv-cuda/src/index.js';

type Answers = Partial<Record<keyof CudaAddon, (...a: unknown[]) => unknown>>;

/**
 * Every call is recorded in `calls` (by name) and answers 0, except those `answers` gives, and
 * malloc / hostAlloc (a fresh address each) and memoryStats (nothing held), which a cache needs.
 */
export function stubAddon(answers: Answers = {}): { addon: CudaAddon; calls: string[] } {
  const calls: string[] = [];
  let next = 0x3_0000_0000;
  const addon = new Proxy({} as CudaAddon, {
    get: (_t, name) => (...a: unknown[]) => {
      calls.push(String(name));
      const answer = answers[name as keyof CudaAddon];
      if (answer) return answer(...a);
      return name === 'malloc' || name === 'hostAlloc' ? (next += 0x10_0000) : name === 'memoryStats' ? { hostBytes: 0, stagingBytes: 0 } : 0;
    },
  });
  return { addon, calls };
}

/** A one-row bf16 `full` cache of `spec` on CUDA device 0 of `addon` (throws what its constructor throws). */
export function stubCache(spec: ModelSpec, addon: CudaAddon): FullKVCache {
  const info = { name: 'cuda', description: 'stub', reason: 'test' };
  return new FullKVCache({ spec, batch: 1, dtype: 'bf16' }, { device: new CudaDevice(addon, 0), info });
}
