import { CACHE_OPTION_KEYS, checkKeys, fmt, resolveCacheOptions, resolveShadowKVOptions, type CacheOptions, type ShadowKVOptions } from './config.js';
import { ConfigError } from './errors/ConfigError.js';
import { storeChunks, storedChunks } from './policies/capacity.js';
import { storeComponents, storeGeometry } from './policies/shadowkv/CompressedStore.js';
import { DTYPE_BYTES } from './dtype.js';
import { resolveSpec, type ModelSpec } from './spec.js';

/** What `estimateMemory` is asked about. */
export interface MemoryQuestion extends CacheOptions {
  spec: ModelSpec;
  /** `'shadowkv'` (default) or `'full'`. */
  policy?: 'shadowkv' | 'full';
  /** Prompt tokens per sequence. */
  tokens: number;
  options?: ShadowKVOptions;
}

/** Bytes a cache will hold (all layers and rows), before anything is allocated. */
export interface MemoryEstimate {
  /** Device tier after prefill, including the exact tail at its largest during generation. */
  device: number;
  /** Host tier (offloaded values). */
  host: number;
  /** A dense K/V cache of the same tokens. */
  dense: number;
  /** Device bytes per component, named as in `memory().components`. */
  components: Record<string, number>;
  /**
   * Extra device bytes held at a peak: while one row of one layer is compressed (f32 keys, factors,
   * Gram), or, for rows kept exact, while one row's tail grows (its old and new buffers both held).
   */
  transient: number;
  /** Whether device + host + transient fit one wasm32 heap (4 GB less the runtime's own memory), the wasm backend's limit per cache. */
  fitsWasmHeap: boolean;
}

/**
 * Bytes of one wasm32 heap (4 GiB) a cache can have: the runtime's own memory (stack, static data,
 * the allocator's slack) is held back. The wasm device's `maxBytes`, so that the creation check and
 * `fitsWasmHeap` agree.
 */
export const WASM_HEAP_BYTES = 2 ** 32 - 64 * 2 ** 20;

/**
 * Predicts a cache's memory from its spec and options (ShadowKV issue #20: a 180 GB pinned
 * allocation failed at start; size batch and context first).
 * @example
 * const m = estimateMemory({ spec: LLAMA3_8B, tokens: 131072, batch: 4, dtype: 'bf16' });
 * console.log(m.device / 2 ** 30, 'GiB device,', m.host / 2 ** 30, 'GiB host');
 */
export function estimateMemory(q: MemoryQuestion): MemoryEstimate {
  checkKeys('estimateMemory', q, ['spec', 'policy', 'tokens', 'options', ...CACHE_OPTION_KEYS]);
  const spec = resolveSpec(q.spec);
  const cache = resolveCacheOptions({ batch: q.batch, dtype: q.dtype, maxTokens: q.maxTokens });
  const policy = q.policy ?? 'shadowkv';
  if (policy !== 'shadowkv' && policy !== 'full') throw new ConfigError(`estimateMemory: policy must be 'shadowkv' or 'full', got ${fmt(policy)}`);
  if (!Number.isInteger(q.tokens) || q.tokens < 0 || q.tokens > cache.maxTokens) {
    throw new ConfigError(`estimateMemory: tokens must be an integer in [0, maxTokens = ${cache.maxTokens}], got ${fmt(q.tokens)}`);
  }
  const { layers, kvHeads: Hkv, headDim: d } = spec;
  const b = DTYPE_BYTES[cache.dtype];
  const rows = layers * cache.batch;
  const S = q.tokens;
  const dense = rows * 2 * Hkv * S * d * b;
  const o = resolveShadowKVOptions(q.options ?? {}, spec);
  const C = o.chunkSize;
  const nc = storedChunks(S, o) * C;
  // NOTE: a tail grows by an eighth at a time, holding its old and new buffers while it copies: one
  // row's whole tail at most (rows grow one at a time). A prompt of 229K tokens failed half-way on
  // wasm where creation had passed 300K without it.
  const growth = 2 * Hkv * S * d * b;
  if (policy === 'full' || S < o.denseThreshold || nc <= 0) {
    return { device: dense, host: 0, dense, components: { exactTail: dense }, transient: growth, fitsWasmHeap: dense + growth <= WASM_HEAP_BYTES };
  }
  const D = Hkv * d;
  const rank = Math.min(o.rank, nc);
  const geometry = storeGeometry(o, { kvHeads: Hkv, headDim: d }, cache.dtype, rank);
  // The store is sized for the prompt's chunks plus one compaction (capacity.ts), host pages rounded up.
  const { host: hostPerRow, ...store } = storeComponents(geometry, storeChunks(nc / C, o, cache.maxTokens));
  const perRow: Record<string, number> = {
    ...store,
    // The tail is sized once compressed for the local window, the recent region and one chunk, within maxTokens.
    exactTail: 2 * Hkv * Math.min(o.localTokens + o.maxRecentTokens + C, cache.maxTokens) * d * b,
  };
  // Dense layers (`denseLayers`) keep the whole row exact, in the tail.
  const sparseRows = (layers - o.denseLayers) * cache.batch;
  const components = Object.fromEntries(Object.entries(perRow).map(([k, v]) => [k, v * sparseRows]));
  components.exactTail! += (dense / rows) * (rows - sparseRows);
  const device = Object.values(components).reduce((a, v) => a + v, 0);
  const host = sparseRows * hostPerRow;
  // One row's compression: the whole prompt in the tail, f32 pre-RoPE keys and factors, the Gram
  // matrix, and (while the factorization runs) the landmarks and min-cosines of every chunk.
  const l = Math.min(rank + o.svdOversample, D);
  const transient = growth + 4 * (nc * D + nc * rank + 2 * rank * D + D * D + 4 * l * D + (nc / C) * (D + Hkv));
  // NOTE: on wasm both tiers live in the one heap.
  return { device, host, dense, components, transient, fitsWasmHeap: device + host + transient <= WASM_HEAP_BYTES };
}
