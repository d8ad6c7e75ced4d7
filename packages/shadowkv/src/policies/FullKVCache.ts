import { BaseKVCache } from './BaseKVCache.js';

/**
 * Exact dense attention over every stored token: the baseline every other policy is measured
 * against. Keys are kept post-RoPE in the storage dtype.
 * @example
 * const cache = await createCache({ policy: 'full', spec: LLAMA3_8B });
 * cache.prefill(0, { keys, values });
 * const out = cache.decode(0, { query, key, value });
 */
export class FullKVCache extends BaseKVCache {
  readonly name = 'full';

  policyOptions(): Record<string, unknown> {
    return {};
  }
}
