// ShadowKV options sized to a model and a prompt instead of Llama-3-8B at 128K (the SDK's defaults).
import { checkKeys, OPTION_LIMITS, type ShadowKVOptions } from '../../shadowkv/src/config.js';
import { ConfigError } from '../../shadowkv/src/errors/ConfigError.js';
import { estimateMemory, type MemoryEstimate } from '../../shadowkv/src/estimateMemory.js';
import { fmt } from '../../shadowkv/src/policies/validate.js';
import { resolveSpec, type ModelSpec } from '../../shadowkv/src/spec.js';
import type { DType } from '../../shadowkv/src/tensor.js';
import type { CacheHints } from './checkpoint/LlamaConfig.js';

/** What `fitCacheOptions` sizes for. */
export interface FitQuestion {
  /** Prompt tokens. */
  promptTokens: number;
  /** Tokens to be generated after it. Default `256`. */
  maxNewTokens?: number;
  /** Share of the context selected per decode step. Default `1 / 64` (1.56 %, the paper's 2048 of 128K). */
  budgetFraction?: number;
  /** Storage dtype, for the memory estimate. Default `'bf16'`. */
  dtype?: DType;
  /** The checkpoint's own settings (`model.config.cacheHints`), taken over the rules below. */
  hints?: CacheHints;
}

/** Options chosen for a model and prompt, with the reason for each. */
export interface CacheFit {
  /** ShadowKV options to create the cache with (`new ShadowKVCache({ spec, maxTokens, ...options })`). */
  options: Required<Pick<ShadowKVOptions, 'rank' | 'chunkSize' | 'budget' | 'outlierChunks' | 'localTokens' | 'maxRecentTokens' | 'denseThreshold'>>;
  /** Capacity per row: the prompt plus the tokens to generate. */
  maxTokens: number;
  /** Whether this prompt will be compressed (false: it stays dense, below `denseThreshold`). */
  compressed: boolean;
  /** Predicted bytes (`estimateMemory`) of this cache at `maxTokens`, next to the dense cache's. */
  memory: MemoryEstimate;
  /** One line per choice, saying what and why. */
  notes: string[];
}

/** The paper's chunk, and the finer one for small budgets (see `chunkSize` below). */
const CHUNK = 8;
const FINE_CHUNK = 4;
const roundTo = (x: number, m: number) => Math.round(x / m) * m;
const ceilTo = (x: number, m: number) => Math.ceil(x / m) * m;
const floorTo = (x: number, m: number) => Math.floor(x / m) * m;

/**
 * Chooses ShadowKV's rank, budget and dense threshold from the model's geometry and the prompt, and
 * says why. The SDK's defaults are the paper's, sized for Llama-3-8B at 128K: a budget of 2048 tokens
 * is all of a 2K prompt, and a dense threshold of 4096 keeps every short prompt exact.
 * @example
 * const fit = fitCacheOptions(model.spec, { promptTokens: ids.length, maxNewTokens: 32 });
 * fit.notes.forEach((n) => console.log(n));
 * const cache = new ShadowKVCache({ spec: model.spec, maxTokens: fit.maxTokens, ...fit.options });
 */
export function fitCacheOptions(spec: ModelSpec, q: FitQuestion): CacheFit {
  resolveSpec(spec); // a ConfigError naming the field, not a TypeError below
  checkKeys('fitCacheOptions question', q, ['promptTokens', 'maxNewTokens', 'budgetFraction', 'dtype', 'hints']);
  const { promptTokens, maxNewTokens = 256, budgetFraction = 1 / 64, dtype = 'bf16', hints = {} } = q;
  checkKeys('fitCacheOptions hints', hints, ['chunkSize']);
  const { maxTokens: limit, chunkSize: chunkLimit, slotTokens } = OPTION_LIMITS;
  if (!Number.isInteger(promptTokens) || promptTokens < 1) throw new ConfigError(`fitCacheOptions: promptTokens must be a positive integer, got ${fmt(promptTokens)}`);
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new ConfigError(`fitCacheOptions: maxNewTokens must be an integer >= 0, got ${fmt(maxNewTokens)}`);
  if (promptTokens + maxNewTokens > limit) throw new ConfigError(`fitCacheOptions: promptTokens + maxNewTokens is ${promptTokens + maxNewTokens}, more than a cache row holds (maxTokens <= ${limit})`);
  if (hints.chunkSize !== undefined && !(Number.isInteger(hints.chunkSize) && hints.chunkSize >= 1 && hints.chunkSize <= chunkLimit)) throw new ConfigError(`fitCacheOptions: hints.chunkSize must be an integer in [1, ${chunkLimit}], got ${fmt(hints.chunkSize)}`);
  if (!(typeof budgetFraction === 'number' && budgetFraction > 0 && budgetFraction <= 1)) throw new ConfigError(`fitCacheOptions: budgetFraction must be a number in (0, 1], got ${fmt(budgetFraction)}`);
  const width = spec.kvHeads * spec.headDim;
  const maxTokens = promptTokens + maxNewTokens;
  // Rank: the paper's 160 of 1024 (5/32) where keys are wide; narrow keys are less redundant, so at
  // least 32 (or half the width), and never more than half: past it U costs more than it saves.
  const paper = Math.round((width * 5) / 32);
  const half = Math.floor(width / 2);
  const rank = Math.min(half, Math.max(paper, Math.min(32, half)));
  // Chunk: the paper's 8 where the budget holds at least 64 of them (2048 tokens hold 256). A smaller
  // budget selects so few chunks that a chunk's mean key (its landmark) hides a one-token target:
  // on the bundled model at 1.56 % of 4K-16K, chunks of 4 answered 16 of the 120 grid prompts that
  // chunks of 8 missed, and missed 1 that 8 answered (bench/results/eval-h200-chunk8.md).
  // A checkpoint's own hint wins: its evaluation measured what its heads need.
  const chunkSize = hints.chunkSize ?? (maxTokens * budgetFraction < 64 * CHUNK ? FINE_CHUNK : CHUNK);
  // Budget: a share of the context, whole chunks, at least 64 tokens and at most the cache's exact
  // slots (a hinted chunk need not divide 64, so both bounds are whole chunks too).
  const budget = Math.min(floorTo(slotTokens, chunkSize), Math.max(ceilTo(8 * CHUNK, chunkSize), roundTo(maxTokens * budgetFraction, chunkSize)));
  // 24 per 1024 of budget, their tokens within the cache's exact slots too.
  const outlierChunks = Math.min(Math.floor((budget / 1024) * 24), Math.floor(slotTokens / chunkSize));
  const localTokens = 32;
  // Recent tokens are attended in full every step: no more of them than the budget before compaction.
  const maxRecentTokens = Math.min(budget, ceilTo(1024, chunkSize));
  // Dense threshold: below ~4x the tokens a step attends anyway, sparse attention saves little.
  const attended = budget + outlierChunks * chunkSize + localTokens;
  const denseThreshold = Math.max(1024, Math.ceil((4 * attended) / CHUNK) * CHUNK);
  const options = { rank, chunkSize, budget, outlierChunks, localTokens, maxRecentTokens, denseThreshold };
  const compressed = promptTokens >= denseThreshold;
  const memory = estimateMemory({ spec, tokens: maxTokens, maxTokens, dtype, options });
  const pct = (x: number) => `${((100 * x) / maxTokens).toFixed(2)} %`;
  const mb = (x: number) => `${(x / 2 ** 20).toFixed(1)} MB`;
  const notes = [
    `rank ${options.rank} of key width ${width} (${spec.kvHeads} kv heads x ${spec.headDim}): ${rank === paper ? "the paper's 5/32 of the width" : `the paper's 5/32 would be ${paper}; narrow keys get at least 32, at most half the width`}; the low-rank keys take ${((100 * options.rank) / width).toFixed(0)} % of the keys' room`,
    `chunkSize ${chunkSize}: ${chunkReason(chunkSize, hints.chunkSize !== undefined)}`,
    `budget ${budget} tokens per kv head and step: ${pct(budget)} of the ${maxTokens}-token context (asked ${(100 * budgetFraction).toFixed(2)} %), whole chunks, at least 64 tokens`,
    `outlierChunks ${outlierChunks} (24 per 1024 of budget), localTokens ${localTokens}, maxRecentTokens ${maxRecentTokens} (at most the budget)`,
    `denseThreshold ${denseThreshold}: 4x the ~${attended} tokens a step attends; this ${promptTokens}-token prompt ${compressed ? 'is compressed' : 'stays dense (exact)'}`,
    `memory at ${maxTokens} tokens (${dtype}): device ${mb(memory.device)} + host ${mb(memory.host)}, dense cache ${mb(memory.dense)}`,
  ];
  return { options, maxTokens, compressed, memory, notes };
}

/** Why `fitCacheOptions` took this chunk size. */
function chunkReason(chunkSize: number, hinted: boolean): string {
  if (hinted) {
    const cost = chunkSize === 1 ? ': a landmark per token, as large as the keys, so the device keeps every key for scoring and only the values move to the host' : '';
    return `the checkpoint's hint (config.json shadowkv.chunk_size, from its own evaluation)${cost}`;
  }
  if (chunkSize === CHUNK) return "the paper's";
  return `the budget holds fewer than 64 chunks of ${CHUNK}, and a small budget's few landmarks (chunk means) hide one-token targets`;
}
