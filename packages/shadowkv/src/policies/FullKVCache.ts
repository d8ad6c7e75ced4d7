import { BaseKVCache, type CacheConfig, type Runtime } from './BaseKVCache.js';

/**
 * Exact dense attention over every stored token: the baseline every other policy is measured
 * against. Keys are kept post-RoPE in the storage dtype.
 * @example
 * await ready();
 * const cache = new FullKVCache({ spec: LLAMA3_8B });
 * cache.prefill(0, { keys, values });
 * const out = cache.decode(0, { query, key, value });
 */
export class FullKVCache extends BaseKVCache {
  readonly name = 'full';

  constructor(config: CacheConfig, runtime?: Runtime) {
    super(config, [], runtime);
  }

  policyOptions(): Record<string, unknown> {
    return {};
  }
}
