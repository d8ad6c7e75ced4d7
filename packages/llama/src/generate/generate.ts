import { ConfigError } from '../../../shadowkv/src/errors/ConfigError.js';
import type { KVCachePolicy } from '../../../shadowkv/src/policies/KVCachePolicy.js';
import type { LlamaModel } from '../model/LlamaModel.js';
import type { Tokenizer } from '../tokenizer/Tokenizer.js';
import { Sampler, type SamplingOptions } from './sample.js';

/** Options of `generate`: sampling, when to stop, and how the prompt goes in. */
export interface GenerateOptions extends SamplingOptions {
  /** Tokens to generate at most. Default `64`. */
  maxNewTokens?: number;
  /** Tokens that end generation (yielded, then it stops). Default: the config's `eos_token_id`s. */
  stopTokens?: readonly number[];
  /** Cache row. Default `0`. */
  sequence?: number;
  /** Prompt tokens per prefill call. Default `512`. */
  chunkTokens?: number;
  /** Called after each prompt chunk. */
  onPrefill?: (done: number, total: number) => void;
  /** With a tokenizer, each yielded token carries the text it completes. */
  tokenizer?: Tokenizer;
  /** Stops generation (before the next token) when aborted. */
  signal?: AbortSignal;
}

/** One generated token. */
export interface GeneratedToken {
  id: number;
  /** 0 for the first generated token. */
  index: number;
  /** Text this token completes (a multi-byte character may wait for its last token); only with `tokenizer`. */
  text?: string;
  /** Whether it is a stop token (the last one yielded). */
  stop: boolean;
}

/**
 * Prefills `prompt` into `cache` (in chunks), then yields tokens as they are generated: greedy by
 * default, sampled with `temperature` / `topK` / `topP` / `seed`. The last yielded token is not run
 * through the model, so it is not in the cache (as in Hugging Face `generate`).
 * @example
 * for await (const t of generate(model, cache, tokenizer.encode('Once upon'), { maxNewTokens: 32, tokenizer })) process.stdout.write(t.text!);
 */
export async function* generate(model: LlamaModel, cache: KVCachePolicy, prompt: readonly number[], options: GenerateOptions = {}): AsyncGenerator<GeneratedToken> {
  const { maxNewTokens = 64, stopTokens = model.config.eosTokenIds, sequence = 0, chunkTokens, onPrefill, tokenizer, signal } = options;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new ConfigError(`maxNewTokens must be an integer >= 0, got ${maxNewTokens}`);
  const sampler = new Sampler(options);
  const stops = new Set(stopTokens);
  const text = tokenizer?.streamDecoder();
  let logits = model.prefill(prompt, cache, { sequence, ...(chunkTokens ? { chunkTokens } : {}), ...(onPrefill ? { onProgress: onPrefill } : {}) });
  for (let index = 0; index < maxNewTokens && !signal?.aborted; index++) {
    const id = sampler.next(logits);
    const stop = stops.has(id);
    yield { id, index, stop, ...(text ? { text: text.push(id) } : {}) };
    if (stop || index + 1 === maxNewTokens || signal?.aborted) return;
    logits = model.forward([id], cache, { sequence });
  }
}
