// Hugging Face `config.json` of a Llama-family model <-> the loop's config and the cache's ModelSpec.
import { OPTION_LIMITS } from '../../../shadowkv/src/config.js';
import type { Llama3RopeScaling, ModelSpec } from '../../../shadowkv/src/spec.js';
import { CheckpointError } from '../errors/CheckpointError.js';

/** The hyper-parameters the forward pass needs, in this package's spelling. */
export interface LlamaConfig {
  vocabSize: number;
  hiddenSize: number;
  /** Width of the SwiGLU MLP. */
  intermediateSize: number;
  layers: number;
  queryHeads: number;
  /** Equal to `queryHeads` for MHA, a divisor of it for GQA. */
  kvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** Llama-3 frequency scaling (`rope_type: "llama3"`), if any. */
  ropeScaling?: Llama3RopeScaling;
  maxPositions: number;
  /** The LM head is the embedding matrix (no `lm_head.weight` needed). */
  tieWordEmbeddings: boolean;
  /** q/k/v/o projections carry biases. */
  attentionBias: boolean;
  /** gate/up/down projections carry biases. */
  mlpBias: boolean;
  bosTokenId?: number;
  eosTokenIds: number[];
  /** ShadowKV settings this checkpoint's own evaluation chose (config.json `shadowkv`), if any. */
  cacheHints?: CacheHints;
}

/**
 * ShadowKV settings a checkpoint carries for itself, measured by its own evaluation: `fitCacheOptions`
 * takes them over its rules. In config.json: `"shadowkv": { "chunk_size": 1 }`.
 */
export interface CacheHints {
  /** Tokens per chunk (a landmark each): 1 where the model's retrieval heads attend single tokens that a chunk's mean key hides. */
  chunkSize?: number;
}

/** Which spelling of RoPE a written config uses: `rope_theta` + `rope_scaling` (transformers 4), or `rope_parameters` (transformers 5). */
export type RopeSpelling = 'rope_theta' | 'rope_parameters';

type Json = Record<string, unknown>;

// NOTE: the checks name the field; parseLlamaConfig names the file once, for all of them.
const bad = (message: string) => new CheckpointError('config', message);

function count(c: Json, key: string, fallback?: number): number {
  const v = c[key] ?? fallback;
  if (!Number.isSafeInteger(v) || (v as number) < 1) throw bad(`${key} must be a positive integer, got ${JSON.stringify(c[key])}`);
  return v as number;
}

function positive(c: Json, key: string, fallback?: number): number {
  const v = c[key] ?? fallback;
  if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) throw bad(`${key} must be a positive number, got ${JSON.stringify(c[key])}`);
  return v;
}

/** An optional object field: absent (undefined or null), or a JSON object; anything else is a CheckpointError. */
function object(c: Json, key: string): Json | undefined {
  const v = c[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw bad(`${key} must be an object, got ${JSON.stringify(v)}`);
  return v as Json;
}

/** An optional flag: absent (false), true or false; a string "true" is not read as either. */
function flag(c: Json, key: string): boolean {
  const v = c[key] ?? false;
  if (typeof v !== 'boolean') throw bad(`${key} must be true or false, got ${JSON.stringify(c[key])}`);
  return v;
}

/** `rope_parameters` (v5) or `rope_theta` + `rope_scaling` (v4), read into theta and optional Llama-3 scaling. */
function readRope(c: Json): { ropeTheta: number; ropeScaling?: Llama3RopeScaling } {
  const params = object(c, 'rope_parameters');
  const scaling = params ?? object(c, 'rope_scaling');
  const ropeTheta = positive(params ?? c, 'rope_theta', 10000);
  const type = scaling?.rope_type ?? scaling?.type ?? 'default';
  if (type === 'default') return { ropeTheta };
  if (type !== 'llama3') throw bad(`rope type '${String(type)}' is not supported (only default and llama3 RoPE)`);
  const s = scaling as Json;
  const ropeScaling = {
    factor: positive(s, 'factor'),
    lowFreqFactor: positive(s, 'low_freq_factor'),
    highFreqFactor: positive(s, 'high_freq_factor'),
    originalMaxPositions: count(s, 'original_max_position_embeddings'),
  };
  if (ropeScaling.highFreqFactor <= ropeScaling.lowFreqFactor) throw bad(`llama3 RoPE needs high_freq_factor > low_freq_factor, got ${ropeScaling.highFreqFactor} and ${ropeScaling.lowFreqFactor}`);
  return { ropeTheta, ropeScaling };
}

/** `bos_token_id` and `eos_token_id` (an id or a list): ids in the vocabulary, or absent. */
function readSpecialIds(c: Json, vocabSize: number): Pick<LlamaConfig, 'bosTokenId' | 'eosTokenIds'> {
  const isId = (id: unknown) => Number.isSafeInteger(id) && (id as number) >= 0 && (id as number) < vocabSize;
  const bos = c.bos_token_id ?? undefined;
  if (bos !== undefined && !isId(bos)) throw bad(`bos_token_id must be a token id in [0, vocab_size = ${vocabSize}), got ${JSON.stringify(bos)}`);
  const eos = c.eos_token_id ?? [];
  const eosTokenIds = Array.isArray(eos) ? eos : [eos];
  if (!eosTokenIds.every(isId)) throw bad(`eos_token_id must be a token id or a list of them, each in [0, vocab_size = ${vocabSize}), got ${JSON.stringify(eos)}`);
  return { ...(bos !== undefined ? { bosTokenId: bos as number } : {}), eosTokenIds: eosTokenIds as number[] };
}

function readHints(c: Json): { cacheHints?: CacheHints } {
  const hints = object(c, 'shadowkv');
  if (!hints) return {};
  if (hints.chunk_size === undefined) return { cacheHints: {} };
  const chunkSize = hints.chunk_size;
  if (!Number.isSafeInteger(chunkSize) || (chunkSize as number) < 1 || (chunkSize as number) > OPTION_LIMITS.chunkSize) {
    throw bad(`shadowkv.chunk_size must be an integer in [1, ${OPTION_LIMITS.chunkSize}], got ${JSON.stringify(chunkSize)}`);
  }
  return { cacheHints: { chunkSize: chunkSize as number } };
}

/**
 * Reads a parsed `config.json`; anything the Llama forward pass cannot run is a `CheckpointError`
 * ('config') that names `file` (`readCheckpoint` passes the file's path) and the field.
 */
export function parseLlamaConfig(json: unknown, file = 'config.json'): LlamaConfig {
  try {
    return readConfig(json);
  } catch (err) {
    if (err instanceof CheckpointError) throw new CheckpointError('config', `${file}: ${err.message}`);
    throw err;
  }
}

function readConfig(json: unknown): LlamaConfig {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw bad('not a JSON object');
  const c = json as Json;
  if (c.model_type !== undefined && c.model_type !== 'llama' && c.model_type !== 'mistral') throw bad(`model_type '${String(c.model_type)}' is not a Llama-family model`);
  if (c.sliding_window !== undefined && c.sliding_window !== null) throw bad(`sliding_window ${JSON.stringify(c.sliding_window)}: sliding-window attention is not supported`);
  if ((c.hidden_act ?? 'silu') !== 'silu') throw bad(`hidden_act '${String(c.hidden_act)}' is not supported (Llama's MLP is SwiGLU: silu)`);
  const queryHeads = count(c, 'num_attention_heads');
  const hiddenSize = count(c, 'hidden_size');
  const kvHeads = count(c, 'num_key_value_heads', queryHeads);
  if (queryHeads % kvHeads !== 0) throw bad(`num_attention_heads (${queryHeads}) must be a multiple of num_key_value_heads (${kvHeads})`);
  const headDim = count(c, 'head_dim', hiddenSize / queryHeads);
  if (headDim % 2 !== 0) throw bad(`head_dim must be even for RoPE, got ${headDim}`);
  const vocabSize = count(c, 'vocab_size');
  return {
    vocabSize,
    hiddenSize,
    intermediateSize: count(c, 'intermediate_size'),
    layers: count(c, 'num_hidden_layers'),
    queryHeads,
    kvHeads,
    headDim,
    rmsNormEps: positive(c, 'rms_norm_eps', 1e-6),
    ...readRope(c),
    maxPositions: count(c, 'max_position_embeddings', 2048),
    tieWordEmbeddings: flag(c, 'tie_word_embeddings'),
    attentionBias: flag(c, 'attention_bias'),
    mlpBias: flag(c, 'mlp_bias'),
    ...readSpecialIds(c, vocabSize),
    ...readHints(c),
  };
}

/** The attention geometry the cache needs: HF Llama rotates with `rotate_half`, so the style is `'half'`. */
export function llamaSpec(config: LlamaConfig): ModelSpec {
  return {
    layers: config.layers,
    queryHeads: config.queryHeads,
    kvHeads: config.kvHeads,
    headDim: config.headDim,
    rope: { theta: config.ropeTheta, style: 'half', ...(config.ropeScaling ? { scaling: config.ropeScaling } : {}) },
  };
}

/** The config as Hugging Face writes it, in either RoPE spelling (what `parseLlamaConfig` reads back). */
export function hfConfigJson(config: LlamaConfig, spelling: RopeSpelling = 'rope_theta'): Json {
  const s = config.ropeScaling;
  const scaling = s ? { rope_type: 'llama3', factor: s.factor, low_freq_factor: s.lowFreqFactor, high_freq_factor: s.highFreqFactor, original_max_position_embeddings: s.originalMaxPositions } : undefined;
  const rope = spelling === 'rope_parameters'
    ? { rope_parameters: { rope_type: 'default', ...scaling, rope_theta: config.ropeTheta } }
    : { rope_theta: config.ropeTheta, rope_scaling: scaling ?? null };
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: config.vocabSize,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.layers,
    num_attention_heads: config.queryHeads,
    num_key_value_heads: config.kvHeads,
    head_dim: config.headDim,
    hidden_act: 'silu',
    rms_norm_eps: config.rmsNormEps,
    ...rope,
    max_position_embeddings: config.maxPositions,
    tie_word_embeddings: config.tieWordEmbeddings,
    attention_bias: config.attentionBias,
    mlp_bias: config.mlpBias,
    ...(config.bosTokenId !== undefined ? { bos_token_id: config.bosTokenId } : {}),
    eos_token_id: config.eosTokenIds.length === 1 ? config.eosTokenIds[0] : config.eosTokenIds,
    ...(config.cacheHints ? { shadowkv: config.cacheHints.chunkSize !== undefined ? { chunk_size: config.cacheHints.chunkSize } : {} } : {}),
  };
}
