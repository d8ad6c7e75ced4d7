import { ConfigError } from './errors/ConfigError.js';
import type { ResolvedSpec } from './spec.js';
import type { DType } from './tensor.js';

/** Options every cache takes. */
export interface CacheOptions {
  /**
   * Batch rows (sequences) the cache holds.
   * - default: `1`
   */
  batch?: number;
  /**
   * Storage dtype of everything the cache keeps (arithmetic is f32).
   * - default: `'bf16'`
   */
  dtype?: DType;
  /**
   * Capacity of one sequence in tokens; a call past it throws `CapacityError`.
   * - default: `262144`
   */
  maxTokens?: number;
}

/** ShadowKV's knobs; defaults are the paper's (Llama-3-8B, 128K context). */
export interface ShadowKVOptions {
  /**
   * Rank `r` of the pre-RoPE key factorization `K ≈ U · SV`, at most the key width
   * `kvHeads * headDim` (a larger rank is a `ConfigError`: it would store more than the keys).
   * - default: `round(5/32 * kvHeads * headDim)`, the paper's 160 at Llama-3-8B's width of 1024
   */
  rank?: number;
  /**
   * Tokens per chunk `C`; one landmark per chunk.
   * - default: `8`
   */
  chunkSize?: number;
  /**
   * Tokens selected per kv head and decode step (a multiple of `chunkSize`).
   * - default: `2048` (1.56 % of 128K)
   */
  budget?: number;
  /**
   * Outlier chunks per kv head, kept exact on the device.
   * - default: `floor(budget / 1024 * 24)`, i.e. 48 at 2048
   */
  outlierChunks?: number;
  /**
   * Last prompt tokens kept exact (the local window).
   * - default: `32`
   */
  localTokens?: number;
  /**
   * First tokens whose chunks are always kept exact (attention sinks), on top of the outliers.
   * - default: `0` (chunk 0 is usually an outlier anyway)
   */
  sinkTokens?: number;
  /**
   * Generated / appended tokens kept exact beyond the local window before their oldest chunks
   * are compressed like the prompt.
   * - default: `1024`
   */
  maxRecentTokens?: number;
  /**
   * Sequences shorter than this stay dense (exact); they are compressed once they reach it.
   * - default: `4096`
   */
  denseThreshold?: number;
  /**
   * The first `denseLayers` layers are never compressed: exact keys and values on the device, every
   * token attended, at any length. Quest keeps its first two layers dense; on the bundled model,
   * layers 0-1 dense took kv lookup at 4K from 0 to 4 of 4 prompts (docs/llama.md). Each such layer
   * costs a dense layer's memory and attention, which `estimateMemory` counts.
   * - default: `0` (the paper: every layer compressed)
   */
  denseLayers?: number;
  /**
   * Scale of the landmark scoring logits `softmax(q · landmark * scoreScale)`, separate from the
   * attention scale (the original code scores with 1/√128 at every head dim).
   * - default: the spec's attention scale (`1 / sqrt(headDim)` unless the spec sets `scale`)
   */
  scoreScale?: number;
  /**
   * Chunks per page of the host tier (values): it grows a page at a time and never copies.
   * - default: `256`
   */
  hostPageChunks?: number;
  /**
   * Value chunks per kv head kept on the device beyond the last step's selection (the hot-value
   * cache, past the paper): a selected chunk found there is copied on the device instead of
   * fetched from the host. Outputs are the same bits with it on or off; `stats().hotHitRate`
   * says how often it served, `bytesFetched` what still crossed to the device. Costs
   * `hotChunks x chunkSize x headDim` values per kv head, row and compressed layer
   * (`estimateMemory`'s `hotValues`). Direct-mapped (chunk c in slot c mod hotChunks): several
   * times `budget / chunkSize` keeps most chunks that drift out of the selection and back.
   * - default: `0` (off)
   */
  hotChunks?: number;
  /**
   * Values on the host tier in fp8 (E4M3 with a power-of-two scale per token row, past the
   * paper): half the host memory and half the bytes a miss moves, each value within 2^-4 of its
   * row's largest magnitude (dequantization itself is exact). Backends with an fp8 host tier
   * only (wasm and cuda; a device without `quantizeValues` is a `ConfigError`). Snapshots keep the
   * dequantized values.
   * - default: `false`
   */
  fp8Values?: boolean;
  /**
   * bf16 values on the host tier with their exponents packed (past the paper): lossless, so the
   * outputs are the same bits as without it, and a chunk whose exponents span at most 15 binades
   * (zeros and subnormals aside) crosses PCIe in 3/4 of its bytes; the others are kept and moved
   * as they are. Costs one byte a chunk on the device (`estimateMemory`'s `tables`); host memory is
   * unchanged. `bytesFetched` still counts whole chunks. bf16 storage only, not with `fp8Values`,
   * on backends whose devices have `packValues` (wasm and cuda); otherwise a `ConfigError`.
   * - default: `false`
   */
  packedValues?: boolean;
  /**
   * Extra columns of the randomized factorization.
   * - default: `16`
   */
  svdOversample?: number;
  /**
   * Subspace iterations of the randomized factorization.
   * - default: `2`
   */
  svdPowerIters?: number;
}

/** Resolved cache options. */
export type ResolvedCacheOptions = Required<CacheOptions>;
/** Resolved ShadowKV options. */
export type ResolvedShadowKVOptions = Required<ShadowKVOptions>;

function check(ok: boolean, message: string): void {
  if (!ok) throw new ConfigError(message);
}


/**
 * Throws `ConfigError` for keys of `o` that are not options (a misspelt option would otherwise be
 * ignored), listing the known ones; `listed` says where a caller's known keys go, when a flat list would mislead.
 */
export function checkKeys(what: string, o: unknown, known: readonly string[], listed?: string): asserts o is object {
  if (o === null || typeof o !== 'object') throw new ConfigError(`${what} must be an object, got ${fmt(o)}`);
  // NOTE: a loop, and the message built only on a miss: every decode step checks its arguments' keys.
  const keys = Object.keys(o);
  for (const k of keys) if (!known.includes(k)) throw unknownKeys(what, keys, known, listed);
}

/** The `ConfigError` naming each of `keys` that is not in `known`. */
function unknownKeys(what: string, keys: readonly string[], known: readonly string[], listed = known.length ? `known: ${known.join(', ')}` : 'it takes none'): ConfigError {
  const unknown = keys.filter((k) => !known.includes(k));
  return new ConfigError(`${what}: unknown option${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `'${k}'`).join(', ')}; ${listed}`);
}

/** Defaults overridden by the options that are set (undefined means "use the default"). */
function withDefaults<T extends object>(defaults: Required<T>, o: T): Required<T> {
  return { ...defaults, ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) };
}

/** Option names every cache takes. */
export const CACHE_OPTION_KEYS = ['batch', 'dtype', 'maxTokens'] as const;
/** Keys of the flat config every cache takes (BaseKVCache's); a policy's own options come beside them. */
export const CACHE_CONFIG_KEYS: readonly string[] = ['spec', 'backend', ...CACHE_OPTION_KEYS];

/** Limits of the options: positions are 32-bit, and per-row slots stay addressable. */
export const OPTION_LIMITS = { batch: 4096, maxTokens: 2 ** 31 - 1, slotTokens: 65536, chunkSize: 1024, window: 2 ** 20, svdOversample: 1024, svdPowerIters: 32, pageElements: 2 ** 28 } as const;

const isIntIn = (v: unknown, min: number, max: number) => Number.isInteger(v) && (v as number) >= min && (v as number) <= max;
/** Any value as text for a message, whatever it is (symbols, proxies, throwing toString); strings quoted, so that '0' does not read as 0. */
export function fmt(v: unknown): string {
  try {
    if (typeof v === 'symbol') return v.toString();
    if (typeof v === 'bigint') return `${v}n`; // a BigInt reads as one: 4096n, where a number is wanted
    if (typeof v === 'string') return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}...` : v);
    if (Array.isArray(v)) return `[${v.map(fmt).join(', ')}]`;
    if (typeof v === 'object' && v !== null) return Object.prototype.toString.call(v);
    return String(v);
  } catch {
    return '(unprintable)';
  }
}

/** Fills defaults into cache options and checks them. */
export function resolveCacheOptions(o: CacheOptions = {}): ResolvedCacheOptions {
  const r = withDefaults<CacheOptions>({ batch: 1, dtype: 'bf16', maxTokens: 262144 }, o);
  check(isIntIn(r.batch, 1, OPTION_LIMITS.batch), `batch must be an integer in [1, ${OPTION_LIMITS.batch}], got ${fmt(r.batch)}`);
  check(['f32', 'f16', 'bf16'].includes(r.dtype), `dtype must be 'f32', 'f16' or 'bf16', got ${fmt(r.dtype)}`);
  check(isIntIn(r.maxTokens, 1, OPTION_LIMITS.maxTokens), `maxTokens must be an integer in [1, 2^31 - 1], got ${fmt(r.maxTokens)}`);
  return r;
}

/** ShadowKV's options against the storage dtype (createCache and estimateMemory alike): packedValues packs bf16 only. */
export function checkShadowKVDtype(o: Pick<ResolvedShadowKVOptions, 'packedValues'>, dtype: DType): void {
  check(!o.packedValues || dtype === 'bf16', `packedValues packs bf16 exponents; this cache stores ${dtype}: use dtype 'bf16' or leave packedValues off`);
}

/** Option names of ShadowKV. */
export const SHADOWKV_OPTION_KEYS = [
  'rank', 'chunkSize', 'budget', 'outlierChunks', 'localTokens', 'sinkTokens', 'maxRecentTokens', 'denseThreshold',
  'denseLayers', 'scoreScale', 'hostPageChunks', 'hotChunks', 'fp8Values', 'packedValues', 'svdOversample', 'svdPowerIters',
] as const;

/** Fills defaults into ShadowKV options for a model and checks their ranges; unknown keys are a `ConfigError`. */
export function resolveShadowKVOptions(o: ShadowKVOptions, spec: Pick<ResolvedSpec, 'layers' | 'kvHeads' | 'headDim' | 'scale'>): ResolvedShadowKVOptions {
  checkKeys('ShadowKV options', o, SHADOWKV_OPTION_KEYS);
  const budget = o.budget ?? 2048;
  const width = spec.kvHeads * spec.headDim;
  const r = withDefaults<ShadowKVOptions>({
    rank: Math.max(1, Math.round((width * 5) / 32)),
    chunkSize: 8,
    budget,
    outlierChunks: Math.floor((budget / 1024) * 24),
    localTokens: 32,
    sinkTokens: 0,
    maxRecentTokens: 1024,
    denseThreshold: 4096,
    denseLayers: 0,
    scoreScale: spec.scale,
    hostPageChunks: 256,
    hotChunks: 0,
    fp8Values: false,
    packedValues: false,
    svdOversample: 16,
    svdPowerIters: 2,
  }, o);
  const L = OPTION_LIMITS;
  check(isIntIn(r.rank, 1, Number.MAX_SAFE_INTEGER), `rank must be an integer >= 1, got ${fmt(r.rank)}`);
  check(r.rank <= width, `rank ${r.rank} exceeds the key width kvHeads * headDim = ${width}: the low-rank keys would take more room than the keys; use rank <= ${width} (default ${Math.round((width * 5) / 32)})`);
  check(isIntIn(r.chunkSize, 1, L.chunkSize), `chunkSize must be an integer in [1, ${L.chunkSize}], got ${fmt(r.chunkSize)}`);
  check(isIntIn(r.budget, r.chunkSize, L.slotTokens) && r.budget % r.chunkSize === 0, `budget must be a multiple of chunkSize (${r.chunkSize}) in [${r.chunkSize}, ${L.slotTokens}], got ${fmt(r.budget)}`);
  check(isIntIn(r.outlierChunks, 0, L.slotTokens) && isIntIn(r.sinkTokens, 0, L.slotTokens) && r.outlierChunks * r.chunkSize + r.sinkTokens <= L.slotTokens,
    `outlierChunks (${fmt(r.outlierChunks)}) x chunkSize + sinkTokens (${fmt(r.sinkTokens)}) must be non-negative integers within ${L.slotTokens} tokens of exact slots`);
  check(isIntIn(r.localTokens, 0, L.window), `localTokens must be an integer in [0, ${L.window}], got ${fmt(r.localTokens)}`);
  check(isIntIn(r.maxRecentTokens, r.chunkSize, L.window), `maxRecentTokens must be an integer in [chunkSize (${r.chunkSize}), ${L.window}], got ${fmt(r.maxRecentTokens)}`);
  check(isIntIn(r.denseThreshold, 1, L.maxTokens), `denseThreshold must be an integer >= 1, got ${fmt(r.denseThreshold)}`);
  check(isIntIn(r.denseLayers, 0, spec.layers), `denseLayers must be an integer in [0, layers = ${spec.layers}], got ${fmt(r.denseLayers)}`);
  check(typeof r.scoreScale === 'number' && r.scoreScale >= 1e-8 && r.scoreScale <= 100, `scoreScale must be a number in [1e-8, 100], got ${fmt(r.scoreScale)}`);
  check(isIntIn(r.hostPageChunks, 1, L.pageElements) && r.hostPageChunks * r.chunkSize * spec.headDim <= L.pageElements,
    `hostPageChunks x chunkSize x headDim must be at most 2^28 elements, got hostPageChunks ${fmt(r.hostPageChunks)}`);
  check(isIntIn(r.hotChunks, 0, L.slotTokens) && r.hotChunks * r.chunkSize <= L.slotTokens,
    `hotChunks must be an integer >= 0 with hotChunks x chunkSize (${r.chunkSize}) at most ${L.slotTokens} tokens, got ${fmt(r.hotChunks)}`);
  check(typeof r.fp8Values === 'boolean', `fp8Values must be true or false, got ${fmt(r.fp8Values)}`);
  check(typeof r.packedValues === 'boolean', `packedValues must be true or false, got ${fmt(r.packedValues)}`);
  check(!(r.fp8Values && r.packedValues), 'packedValues and fp8Values are two formats of the host tier: choose one');
  check(isIntIn(r.svdOversample, 0, L.svdOversample), `svdOversample must be an integer in [0, ${L.svdOversample}], got ${fmt(r.svdOversample)}`);
  check(isIntIn(r.svdPowerIters, 0, L.svdPowerIters), `svdPowerIters must be an integer in [0, ${L.svdPowerIters}], got ${fmt(r.svdPowerIters)}`);
  return r;
}
