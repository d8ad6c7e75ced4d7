import { CACHE_OPTION_KEYS, checkKeys, checkShadowKVDtype, fmt, resolveCacheOptions, resolveShadowKVOptions, type CacheOptions, type ShadowKVOptions } from './config.js';
import { ConfigError } from './errors/ConfigError.js';
import { storeChunks, storedChunks } from './policies/capacity.js';
import { storeComponents, storeGeometry } from './policies/shadowkv/CompressedStore.js';
import { COUNTERS } from './backends/LayerStep.js';
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
  /**
   * ShadowKV: how many rows of a layer hold their whole prompt dense at once before they are
   * compressed (default: batch, as when one prefill call brings every row). A server that prefills
   * and compresses rows one at a time (`sequences: [i]`, then `compress({ sequences: [i] })`) passes 1.
   */
  prefillRows?: number;
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
   * Extra device bytes held at a peak: while a layer's rows are dense before their first step and
   * one of them is compressed (f32 keys, factors, Gram), or one row's tail grows (its old and new
   * buffers both held), or a prefill call of `tokens` tokens works (`callBytes`); and the decode
   * step's staging.
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
 * Bytes the calls themselves hold besides the rows (f32 inputs assumed: the largest). `prefill`: a
 * call of `tokens` tokens with queries works on one kv group of one row at a time, holding its
 * rotated queries and outputs (f32), the staged input rows and, for 16-bit inputs, the converted
 * output: 14 bytes per query element, more than storing its keys takes (8 per key element).
 * `kept`: what stays between calls: the queries' positions (i32), a decode step's staged q, k, v
 * and out for every row, the layers' own outputs (device queries), a plugin policy's per-row
 * copies, the RoPE frequencies and layer counters, and a few KiB of step records and selections.
 */
export function callBytes(spec: ModelSpec, batch: number, tokens: number): { prefill: number; kept: number } {
  const { layers, queryHeads: Hq, kvHeads: Hkv, headDim: d } = resolveSpec(spec);
  const g = Hq / Hkv;
  const step = 4 * d * (batch * (2 * Hq + 2 * Hkv + layers * Hq) + 2 * Hq + Hkv);
  return { prefill: 14 * g * tokens * d, kept: 4 * g * tokens + step + 8 * (d / 2 + layers * COUNTERS) + 4096 };
}

/**
 * Predicts a cache's memory from its spec and options (ShadowKV issue #20: a 180 GB pinned
 * allocation failed at start; size batch and context first).
 * @example
 * const m = estimateMemory({ spec: LLAMA3_8B, tokens: 131072, batch: 4, dtype: 'bf16' });
 * console.log(m.device / 2 ** 30, 'GiB device,', m.host / 2 ** 30, 'GiB host');
 */
export function estimateMemory(q: MemoryQuestion): MemoryEstimate {
  checkKeys('estimateMemory', q, ['spec', 'policy', 'tokens', 'options', 'prefillRows', ...CACHE_OPTION_KEYS]);
  const spec = resolveSpec(q.spec);
  const cache = resolveCacheOptions({ batch: q.batch, dtype: q.dtype, maxTokens: q.maxTokens });
  const policy = q.policy ?? 'shadowkv';
  if (policy !== 'shadowkv' && policy !== 'full') throw new ConfigError(`estimateMemory: policy must be 'shadowkv' or 'full', got ${fmt(policy)}`);
  if (!Number.isInteger(q.tokens) || q.tokens < 0 || q.tokens > cache.maxTokens) {
    throw new ConfigError(`estimateMemory: tokens must be an integer in [0, maxTokens = ${cache.maxTokens}], got ${fmt(q.tokens)}`);
  }
  const prefillRows = q.prefillRows ?? cache.batch;
  if (!Number.isInteger(prefillRows) || prefillRows < 1 || prefillRows > cache.batch) {
    throw new ConfigError(`estimateMemory: prefillRows must be an integer in [1, batch = ${cache.batch}], got ${fmt(q.prefillRows)}`);
  }
  const { layers, kvHeads: Hkv, headDim: d } = spec;
  const b = DTYPE_BYTES[cache.dtype];
  const rows = layers * cache.batch;
  const S = q.tokens;
  const dense = rows * 2 * Hkv * S * d * b;
  const o = resolveShadowKVOptions(q.options ?? {}, spec);
  checkShadowKVDtype(o, cache.dtype);
  const C = o.chunkSize;
  const nc = storedChunks(S, o) * C;
  // NOTE: a tail grows by an eighth at a time, holding its old and new buffers while it copies: one
  // row's whole tail at most (rows grow one at a time). A prompt of 229K tokens failed half-way on
  // wasm where creation had passed 300K without it.
  const growth = 2 * Hkv * S * d * b;
  const calls = callBytes(spec, cache.batch, S);
  if (policy === 'full' || S < o.denseThreshold || nc <= 0) {
    // A growth's old buffer is freed before a prefill call's working memory is made.
    const transient = Math.max(growth, calls.prefill) + calls.kept;
    return { device: dense, host: 0, dense, components: { exactTail: dense }, transient, fitsWasmHeap: dense + transient <= WASM_HEAP_BYTES };
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
  // One row's compression: f32 pre-RoPE keys and factors, the Gram matrix, and (while the
  // factorization runs) the landmarks and min-cosines of every chunk.
  const l = Math.min(rank + o.svdOversample, D);
  const compression = 4 * (nc * D + nc * rank + 2 * rank * D + D * D + 4 * l * D + (nc / C) * (D + Hkv));
  // NOTE: the rows a prefill brings are dense at once until their first step (the step builds every
  // due row's store before it commits any): prefillRows whole tails, and then the largest of a
  // growth's old buffer, one row's compression, a prefill call's working memory.
  const transient = prefillRows * growth + Math.max(growth, compression, calls.prefill) + calls.kept;
  // NOTE: on wasm both tiers live in the one heap.
  return { device, host, dense, components, transient, fitsWasmHeap: device + host + transient <= WASM_HEAP_BYTES };
}
