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

const isInt = (v: number, min: number) => Number.isInteger(v) && v >= min;

/** Throws `ConfigError` for keys of `o` that are not options (a misspelt option would otherwise be ignored). */
export function checkKeys(what: string, o: object, known: readonly string[]): void {
  if (o === null || typeof o !== 'object') throw new ConfigError(`${what} must be an object, got ${String(o)}`);
  const unknown = Object.keys(o).filter((k) => !known.includes(k));
  if (unknown.length) throw new ConfigError(`${what}: unknown option${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `'${k}'`).join(', ')}; known: ${known.join(', ')}`);
}

/** Defaults overridden by the options that are set (undefined means "use the default"). */
function withDefaults<T extends object>(defaults: Required<T>, o: T): Required<T> {
  return { ...defaults, ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) };
}

/** Option names every cache takes. */
export const CACHE_OPTION_KEYS = ['batch', 'dtype', 'maxTokens'] as const;

/** Fills defaults into cache options and checks them. */
export function resolveCacheOptions(o: CacheOptions = {}): ResolvedCacheOptions {
  const r = withDefaults<CacheOptions>({ batch: 1, dtype: 'bf16', maxTokens: 262144 }, o);
  check(isInt(r.batch, 1), `batch must be an integer >= 1, got ${r.batch}`);
  check(['f32', 'f16', 'bf16'].includes(r.dtype), `dtype must be 'f32', 'f16' or 'bf16', got '${String(r.dtype)}'`);
  check(isInt(r.maxTokens, 1), `maxTokens must be an integer >= 1, got ${r.maxTokens}`);
  return r;
}

/** Option names of ShadowKV. */
export const SHADOWKV_OPTION_KEYS = [
  'rank', 'chunkSize', 'budget', 'outlierChunks', 'localTokens', 'sinkTokens', 'maxRecentTokens', 'denseThreshold',
  'scoreScale', 'hostPageChunks', 'svdOversample', 'svdPowerIters',
] as const;

/** Fills defaults into ShadowKV options for a model and checks their ranges; unknown keys are a `ConfigError`. */
export function resolveShadowKVOptions(o: ShadowKVOptions, spec: Pick<ResolvedSpec, 'kvHeads' | 'headDim' | 'scale'>): ResolvedShadowKVOptions {
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
    scoreScale: spec.scale,
    hostPageChunks: 256,
    svdOversample: 16,
    svdPowerIters: 2,
  }, o);
  check(isInt(r.rank, 1), `rank must be an integer >= 1, got ${r.rank}`);
  check(r.rank <= width, `rank ${r.rank} exceeds the key width kvHeads * headDim = ${width}: the low-rank keys would take more room than the keys; use rank <= ${width} (default ${Math.round((width * 5) / 32)})`);
  check(isInt(r.chunkSize, 1), `chunkSize must be an integer >= 1, got ${r.chunkSize}`);
  check(isInt(r.budget, r.chunkSize) && r.budget % r.chunkSize === 0, `budget must be a positive multiple of chunkSize (${r.chunkSize}), got ${r.budget}`);
  check(isInt(r.outlierChunks, 0), `outlierChunks must be an integer >= 0, got ${r.outlierChunks}`);
  check(isInt(r.localTokens, 0), `localTokens must be an integer >= 0, got ${r.localTokens}`);
  check(isInt(r.sinkTokens, 0), `sinkTokens must be an integer >= 0, got ${r.sinkTokens}`);
  check(isInt(r.maxRecentTokens, r.chunkSize), `maxRecentTokens must be an integer >= chunkSize (${r.chunkSize}), got ${r.maxRecentTokens}`);
  check(isInt(r.denseThreshold, 1), `denseThreshold must be an integer >= 1, got ${r.denseThreshold}`);
  check(r.scoreScale > 0 && Number.isFinite(r.scoreScale), `scoreScale must be a positive finite number, got ${r.scoreScale}`);
  check(isInt(r.hostPageChunks, 1), `hostPageChunks must be an integer >= 1, got ${r.hostPageChunks}`);
  check(isInt(r.svdOversample, 0), `svdOversample must be an integer >= 0, got ${r.svdOversample}`);
  check(isInt(r.svdPowerIters, 0), `svdPowerIters must be an integer >= 0, got ${r.svdPowerIters}`);
  return r;
}
