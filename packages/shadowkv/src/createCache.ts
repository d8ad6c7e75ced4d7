import type { BackendInfo } from './backends/Backend.js';
import type { Device } from './backends/Device.js';
import { resolveBackend } from './backends/registry.js';
import { resolveCacheOptions, type CacheOptions, type ResolvedCacheOptions } from './config.js';
import { ConfigError } from './errors/ConfigError.js';
import { SnapshotError } from './errors/SnapshotError.js';
import { BaseKVCache } from './policies/BaseKVCache.js';
import { decodeSnapshot } from './snapshot.js';
import { resolveSpec, type ModelSpec, type ResolvedSpec } from './spec.js';

/** What a policy factory receives. */
export interface PolicyContext {
  spec: ResolvedSpec;
  cache: ResolvedCacheOptions;
  device: Device;
  /** The policy's own options, as passed to `createCache`. */
  options: Record<string, unknown>;
}

/** Builds a policy; `BaseKVCache` subclasses get validation, RoPE, the exact tail and snapshots for free. */
export type PolicyFactory = (ctx: PolicyContext) => BaseKVCache;

const policies = new Map<string, PolicyFactory>();

/**
 * Registers a cache policy under a name, for `createCache({ policy: name })`.
 * @example
 * registerPolicy('mine', ({ spec, cache, device, options }) => new MyPolicy(spec, cache, device, options));
 */
export function registerPolicy(name: string, factory: PolicyFactory): void {
  const have = policies.get(name);
  if (have && have !== factory) throw new ConfigError(`policy '${name}' is already registered`);
  policies.set(name, factory);
}

/** Names of the registered policies. */
export function listPolicies(): string[] {
  return [...policies.keys()];
}

/** Options of `createCache`. */
export interface CreateCacheOptions<P = Record<string, unknown>> extends CacheOptions {
  spec: ModelSpec;
  /**
   * Which policy.
   * - `'shadowkv'` (default): ShadowKV sparse attention over low-rank keys and offloaded values
   * - `'full'`: exact dense attention (the baseline)
   * - any name given to `registerPolicy`
   */
  policy?: string;
  /**
   * Which runtime.
   * - `'auto'` (default): CUDA when `shadowkv-cuda` loads and finds a device, else wasm; `backendInfo.reason` says why
   * - `'wasm'`: the CPU reference runtime
   * - `'cuda'`: the native runtime; a typed error when it cannot load
   */
  backend?: string;
  /** The policy's options, e.g. `ShadowKVOptions`. */
  options?: P;
}

/** A cache and where it runs. */
export type Cache = BaseKVCache & { readonly backendInfo: BackendInfo };

/**
 * Creates a KV cache for a model. Everything but creation is synchronous.
 * @example
 * import { createCache, LLAMA3_8B } from 'shadowkv';
 * const cache = await createCache({ spec: LLAMA3_8B, policy: 'shadowkv', batch: 2, options: { budget: 2048 } });
 * console.log(cache.backendInfo.reason);
 */
export async function createCache<P = Record<string, unknown>>(o: CreateCacheOptions<P>): Promise<Cache> {
  const spec = resolveSpec(o.spec);
  const cache = resolveCacheOptions({ batch: o.batch, dtype: o.dtype, maxTokens: o.maxTokens });
  const name = o.policy ?? 'shadowkv';
  const factory = policies.get(name);
  if (!factory) throw new ConfigError(`unknown policy '${name}'; registered: ${listPolicies().join(', ')}`);
  const { backend, info } = await resolveBackend(o.backend ?? 'auto');
  const device = backend.createDevice();
  let policy: BaseKVCache;
  try {
    policy = factory({ spec, cache, device, options: { ...(o.options ?? {}) } });
  } catch (err) {
    device.dispose();
    throw err;
  }
  return Object.assign(policy, { backendInfo: info });
}

/**
 * Restores a cache from `save()` bytes, on any backend. Throws `SnapshotError` when the bytes are
 * truncated, altered, of another version, or inconsistent.
 */
export async function loadCache(bytes: Uint8Array, o: { backend?: string } = {}): Promise<Cache> {
  const content = decodeSnapshot(bytes);
  const { policy, spec, cache, options, layers, counters } = content as {
    policy: string; spec: ModelSpec; cache: CacheOptions; options: Record<string, unknown>; layers: unknown; counters: Record<string, number>;
  };
  if (typeof policy !== 'string' || !Array.isArray(layers)) throw new SnapshotError('loadCache: snapshot content is incomplete (policy or layers missing)');
  let restored: Cache;
  try {
    restored = await createCache({ ...cache, spec, policy, backend: o.backend, options });
  } catch (err) {
    throw new SnapshotError(`loadCache: the snapshot's configuration is not usable: ${(err as Error).message}`);
  }
  checkLayers(layers, restored);
  try {
    restored.restore(layers as never, counters ?? {});
  } catch (err) {
    restored.dispose();
    throw new SnapshotError(`loadCache: snapshot state does not fit its cache: ${(err as Error).message}`);
  }
  return restored;
}

function checkLayers(layers: unknown[], cache: Cache): void {
  const rowsOk = layers.length === cache.spec.layers && layers.every((row) => Array.isArray(row) && row.length === cache.batch);
  const tailOk = rowsOk && (layers as { length: number; tail: { count: number; k: { length: number }; v: { length: number } } }[][]).every((row) =>
    row.every((st) => {
      const n = st?.tail?.count * cache.spec.kvHeads * cache.spec.headDim;
      return Number.isInteger(st?.length) && st.tail?.k?.length === n && st.tail?.v?.length === n && st.length >= st.tail.count;
    }),
  );
  if (!tailOk) {
    cache.dispose();
    throw new SnapshotError(`loadCache: snapshot layers do not match ${cache.spec.layers} layers x ${cache.batch} rows of the recorded geometry`);
  }
}
