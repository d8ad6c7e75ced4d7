import { checkSignal } from './abortable.js';
import { resolveBackend } from './backends/registry.js';
import { CACHE_CONFIG_KEYS, checkKeys, fmt, resolveCacheOptions, type CacheOptions, type ResolvedCacheOptions, type ShadowKVOptions } from './config.js';
import { need, record } from './policies/snapshotChecks.js';
import { ConfigError } from './errors/ConfigError.js';
import { OutOfMemoryError } from './errors/OutOfMemoryError.js';
import { SnapshotError } from './errors/SnapshotError.js';
import { BaseKVCache, RESTORE, type CacheConfig, type Runtime } from './policies/BaseKVCache.js';
import type { FullKVCache } from './policies/FullKVCache.js';
import type { ShadowKVCache } from './policies/shadowkv/ShadowKVCache.js';
import type { QuestCache, QuestOptions } from './policies/quest/QuestCache.js';
import type { SnapKVCache, SnapKVOptions } from './policies/snapkv/SnapKVCache.js';
import type { StreamingCache, StreamingOptions } from './policies/streaming/StreamingCache.js';
import { decodeSnapshot } from './snapshot.js';
import { resolveSpec, type ModelSpec, type ResolvedSpec } from './spec.js';

/**
 * The policies `createCache` knows by name, with their class and options, so that
 * `createCache({ policy: 'shadowkv' })` is typed as a `ShadowKVCache`. A plugin adds its own by
 * declaration merging: `declare module 'shadowkv' { interface PolicyTypes { mine: { cache: Mine; options: MineOptions } } }`.
 */
export interface PolicyTypes {
  full: { cache: FullKVCache; options: Record<string, never> };
  shadowkv: { cache: ShadowKVCache; options: ShadowKVOptions };
  streaming: { cache: StreamingCache; options: StreamingOptions };
  quest: { cache: QuestCache; options: QuestOptions };
  snapkv: { cache: SnapKVCache; options: SnapKVOptions };
}

/** The cache type of a policy name (a `BaseKVCache` for names registered without types). */
export type CacheOf<P extends string> = P extends keyof PolicyTypes ? PolicyTypes[P]['cache'] : BaseKVCache;
/** The options type of a policy name. */
export type OptionsOf<P extends string> = P extends keyof PolicyTypes ? PolicyTypes[P]['options'] : Record<string, unknown>;

/**
 * Builds a policy from the flat config (spec, cache options and its own options `O`, unchecked:
 * the policy's constructor checks them) on a started runtime.
 */
export type PolicyFactory<O extends object = Record<string, unknown>> = (config: CacheConfig & O, runtime: Runtime) => BaseKVCache;

const policies = new Map<string, PolicyFactory<never>>();

/**
 * Registers a cache policy under a name, for `createCache({ policy: name })` and `loadCache`.
 * Registering the same factory again is a no-op; another factory under a taken name is a `ConfigError`.
 * @example
 * const createMine: PolicyFactory<MineOptions> = (config, runtime) => new MyPolicy(config, runtime);
 * registerPolicy('mine', createMine);
 */
export function registerPolicy<O extends object>(name: string, factory: PolicyFactory<O>): void {
  if (typeof name !== 'string' || !name) throw new ConfigError(`registerPolicy: the name must be a non-empty string, got ${String(name)}`);
  if (typeof factory !== 'function') throw new ConfigError(`registerPolicy('${name}'): the factory must be a function`);
  const have = policies.get(name);
  if (have && have !== (factory as PolicyFactory<never>)) {
    throw new ConfigError(`registerPolicy('${name}'): the name is taken by another factory; pick another name, or register the same factory object once per process`);
  }
  policies.set(name, factory as PolicyFactory<never>);
}

/** Names of the registered policies. */
export function listPolicies(): string[] {
  return [...policies.keys()];
}

/** Options of `createCache`. */
export interface CreateCacheOptions<P extends string = 'shadowkv'> extends CacheOptions {
  spec: ModelSpec;
  /**
   * Which policy.
   * - `'shadowkv'` (default): ShadowKV sparse attention over low-rank keys and offloaded values
   * - `'full'`: exact dense attention (the baseline)
   * - `'streaming'`: attention sinks + a recent window (StreamingLLM)
   * - `'quest'`: query-aware top chunks by a min/max key bound, everything on the device (Quest)
   * - `'snapkv'`: prompt tokens kept by the votes of its last queries (SnapKV)
   * - any name given to `registerPolicy`
   */
  policy?: P;
  /**
   * Which runtime.
   * - `'auto'` (default): CUDA when `shadowkv-cuda` loads and finds a device, else wasm; `backendInfo.reason` says why
   * - `'wasm'`: the CPU reference runtime
   * - `'cuda'`: the native runtime; a typed error when it cannot load
   */
  backend?: string;
  /** The policy's options, e.g. `ShadowKVOptions`; an unknown key is a `ConfigError`. */
  options?: OptionsOf<P>;
  /**
   * Stops waiting for the backend to start: the call rejects with `signal.reason` and makes no cache
   * (the start goes on, for the next call). Without it, a backend whose factory never settles is waited for forever.
   */
  signal?: AbortSignal;
}

/** A cache and where it runs (every cache has `backendInfo`). */
export type Cache = BaseKVCache;

/**
 * Creates a KV cache for a model, loading the backend first. Everything but creation is synchronous.
 * @example
 * import { createCache, LLAMA3_8B } from 'shadowkv';
 * const cache = await createCache({ spec: LLAMA3_8B, policy: 'shadowkv', batch: 2, options: { budget: 2048 } });
 * console.log(cache.backendInfo.reason, cache.options.rank);
 */
export async function createCache<P extends string = 'shadowkv'>(o: CreateCacheOptions<P>): Promise<CacheOf<P>> {
  checkKeys('createCache', o, ['policy', 'options', 'signal', ...CACHE_CONFIG_KEYS]);
  const name = o.policy ?? 'shadowkv';
  const factory = policies.get(name);
  if (!factory) throw new ConfigError(`unknown policy ${typeof name === 'string' ? `'${name}'` : `(a ${typeof name}, not a name)`}; registered: ${listPolicies().join(', ')}`);
  const own = (o.options ?? {}) as Record<string, unknown>;
  if (typeof own !== 'object') throw new ConfigError(`createCache: options must be an object of the policy's options, got ${fmt(own)}`);
  // NOTE: the policy gets one flat config, so a cache key inside `options` would pass its check and be dropped here.
  const misplaced = Object.keys(own).filter((k) => CACHE_CONFIG_KEYS.includes(k));
  if (misplaced.length) {
    const [are, them] = misplaced.length > 1 ? ['are options', 'them'] : ['is an option', 'it'];
    throw new ConfigError(`createCache: ${misplaced.map((k) => `'${k}'`).join(', ')} in options ${are} of every cache, not of policy '${name}': pass ${them} beside options, with createCache's own (${CACHE_CONFIG_KEYS.join(', ')})`);
  }
  const signal = checkSignal('createCache', o.signal);
  const { backend, info } = await resolveBackend(o.backend ?? 'auto', signal);
  // NOTE: checked again after the await, before anything is allocated: an abort wins over a start that landed with it.
  signal?.throwIfAborted();
  const device = backend.createDevice();
  let cache: unknown;
  try {
    cache = factory({ ...own, spec: o.spec, batch: o.batch, dtype: o.dtype, maxTokens: o.maxTokens } as never, { device, info });
  } catch (err) {
    device.dispose();
    throw err;
  }
  const problem = factoryProblem(name, cache, device);
  if (problem) {
    // Ours to free: the device made here, and a new cache built on another; never a cache returned before.
    if (cache instanceof BaseKVCache && !made.has(cache)) cache.dispose();
    device.dispose();
    throw new ConfigError(`createCache: the factory registered as '${name}' ${problem}`);
  }
  made.add(cache as BaseKVCache);
  return cache as CacheOf<P>;
}

/** Every cache createCache returned: a factory that hands one out again breaks the next caller's. */
const made = new WeakSet<BaseKVCache>();

/** Why a factory's result is not a new cache of its policy on the runtime it was given, or undefined. */
function factoryProblem(name: string, cache: unknown, device: unknown): string | undefined {
  if (!(cache instanceof BaseKVCache)) return 'returned something other than a cache (a BaseKVCache, e.g. a PolicyCache subclass)';
  if (made.has(cache)) return 'returned a cache it had made before; it must build a new one per call';
  if ((cache as unknown as { device: unknown }).device !== device) return "built its cache on a runtime of its own; pass the factory's second argument (runtime) to the constructor";
  // NOTE: a snapshot records this name, and loadCache rebuilds the policy registered under it.
  if (cache.name !== name) return `made a cache named '${cache.name}'; give its class \`readonly name = '${name}'\`, which snapshots record`;
  return undefined;
}

/**
 * Restores a cache from `save()` bytes on the backend asked for (tested: the wasm backend that saved
 * it). Every field is checked against the spec and options the snapshot records before anything
 * is allocated; the restored cache is new, so a rejected snapshot changes nothing. Throws
 * `SnapshotError` when the bytes are truncated, altered, of another version, or inconsistent.
 * `signal` stops waiting for the backend, as in `createCache`: the call rejects with its reason.
 */
export async function loadCache(bytes: Uint8Array, o: { backend?: string; signal?: AbortSignal } = {}): Promise<BaseKVCache> {
  checkKeys('loadCache options', o, ['backend', 'signal']);
  const signal = checkSignal('loadCache', o.signal);
  // NOTE: the bytes are decoded (copied out) before the first await: a caller that reuses its buffer
  // once the call returned, or a writer still filling it, must not change what is restored.
  let content: Record<string, unknown> | undefined, refused: unknown;
  try {
    content = record(decodeSnapshot(bytes), 'snapshot', ['policy', 'spec', 'cache', 'options', 'counters', 'layerCounters', 'layers']);
  } catch (err) {
    refused = err;
  }
  // The caller's backend first, so that its errors (NoDeviceError, an unknown name) keep their class.
  await resolveBackend(o.backend ?? 'auto', signal);
  if (!content) throw refused;
  need(typeof content.policy === 'string' && policies.has(content.policy), 'snapshot.policy', `must name a registered policy (${listPolicies().join(', ')}), got ${String(content.policy)}`);
  // maxTokens is recorded only where the cache was created with it (BaseKVCache.snapshot), and is
  // passed on only then: a declared size is checked against the device, a default one is not.
  let spec: ResolvedSpec, saved: CacheOptions, cache: ResolvedCacheOptions;
  try {
    spec = resolveSpec(content.spec as ModelSpec);
    saved = record(content.cache, 'snapshot.cache', ['batch', 'dtype'], ['maxTokens']) as CacheOptions;
    cache = resolveCacheOptions(saved);
  } catch (err) {
    throw new SnapshotError(`loadCache: the snapshot's spec or cache options are not usable: ${(err as Error).message}`);
  }
  // The structure is checked before a cache is made, so a small snapshot cannot ask for a huge one.
  const { layers, layerCounters } = content;
  need(Array.isArray(layers) && layers.length === spec.layers, 'snapshot.layers', `must hold ${spec.layers} layers`);
  (layers as unknown[]).forEach((row, l) => need(Array.isArray(row) && row.length === cache.batch, `snapshot.layers[${l}]`, `must hold ${cache.batch} rows`));
  need(Array.isArray(layerCounters) && layerCounters.length === spec.layers, 'snapshot.layerCounters', `must hold ${spec.layers} layers`);
  let restored: BaseKVCache;
  try {
    const options = record(content.options, 'snapshot.options', Object.keys(content.options ?? {}));
    restored = await createCache({ ...saved, spec, policy: content.policy, backend: o.backend, options, signal });
  } catch (err) {
    if (signal?.aborted && err === signal.reason) throw err;
    // Out of memory is the device's answer to a valid snapshot (its shortfall kept), not a fault of the bytes.
    throw err instanceof SnapshotError || err instanceof OutOfMemoryError ? err : new SnapshotError(`loadCache: the snapshot's configuration is not usable: ${(err as Error).message}`);
  }
  try {
    restored[RESTORE]({ layers: layers as unknown[][], counters: content.counters, layerCounters: layerCounters as unknown[] });
  } catch (err) {
    restored.dispose();
    throw err instanceof SnapshotError ? err : new SnapshotError(`loadCache: snapshot state could not be restored: ${(err as Error).message}`);
  }
  return restored;
}
