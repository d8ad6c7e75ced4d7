import { createCache, type Cache, type OptionsOf } from '../createCache.js';
import type { DType } from '../tensor.js';
import { KIT_SPEC } from './inputs.js';

/** A policy as the kit tests it: its registered name and two configurations on `KIT_SPEC`. */
export interface PolicyUnderTest<P extends string = string> {
  /** The name it is registered under (`registerPolicy`): the kit makes caches with `createCache` and restores them with `loadCache`. */
  name: P;
  /** Options under which it attends every token the kit stores (at most 400 per row): its outputs must match `full`'s. */
  wide: OptionsOf<P>;
  /** Options under which it is sparse on the kit's rows (100 to 300 tokens): it must attend fewer tokens than it holds. */
  tight: OptionsOf<P>;
  /** It evicts: under `tight` its exact rows must take less memory than a dense cache of the same tokens. */
  evicts?: boolean;
  /** It attends every token under both configurations (the `full` baseline): no step may read fewer. */
  dense?: boolean;
}

/** Where a suite runs: a backend and a storage dtype (a `TestEnv`). */
export interface KitEnv {
  backend: string;
  dtype: DType;
}

/** A cache of the policy (or of `full`) on `KIT_SPEC` in an env. */
export function makeCache(p: PolicyUnderTest, which: 'wide' | 'tight' | 'full', env: KitEnv, batch = 2, maxTokens?: number): Promise<Cache> {
  const base = { spec: KIT_SPEC, batch, dtype: env.dtype, backend: env.backend, maxTokens };
  return which === 'full' ? createCache({ ...base, policy: 'full' }) : createCache({ ...base, policy: p.name, options: p[which] as never });
}
