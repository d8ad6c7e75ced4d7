import { checkKeys } from '../../../shadowkv/src/config.js';
import { ConfigError } from '../../../shadowkv/src/errors/ConfigError.js';
import { ReentrancyError } from '../../../shadowkv/src/errors/ReentrancyError.js';
import type { KVCachePolicy } from '../../../shadowkv/src/policies/KVCachePolicy.js';
import { fmt } from '../../../shadowkv/src/policies/validate.js';
import { resolveSpec } from '../../../shadowkv/src/spec.js';
import { checkCacheSpec, checkPositions, checkSequenceOption, rowWrites } from '../model/cacheCall.js';
import type { LlamaModel } from '../model/LlamaModel.js';
import type { Tokenizer } from '../tokenizer/Tokenizer.js';
import { checkSampling, Sampler, SAMPLING_KEYS, type SamplingOptions } from './sample.js';

/** Options of `generate`: sampling, when to stop, and how the prompt goes in. */
export interface GenerateOptions extends SamplingOptions {
  /**
   * Tokens to generate at most. Default `64`. The prompt and all of these but the last (which is not
   * run through the model) must fit the model's positions (`config.maxPositions`, less what the row
   * holds): a generation that could pass them is a `CapacityError` before the prompt runs, not one
   * cut short there, which would look like a generation that ended.
   */
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
  /**
   * Stops generation when aborted: before the prompt, between its chunks (the prompt then leaves the
   * cache as it was) or before the next token. Generation ends without an error, as at a stop token.
   */
  signal?: AbortSignal;
}

const GENERATE_KEYS = [...SAMPLING_KEYS, 'maxNewTokens', 'stopTokens', 'sequence', 'chunkTokens', 'onPrefill', 'tokenizer', 'signal'];

/** One generated token. */
export interface GeneratedToken {
  id: number;
  /** 0 for the first generated token. */
  index: number;
  /**
   * Text this token completes (a multi-byte character may wait for its last token); only with `tokenizer`.
   * The last token's (a stop token, or the `maxNewTokens`th) also holds what is left unfinished, as
   * U+FFFD: the texts joined are `tokenizer.decode(ids)`. (Broken off early, the stream has no last token.)
   */
  text?: string;
  /** Whether it is a stop token (the last one yielded). */
  stop: boolean;
}

/**
 * Prefills `prompt` into `cache` (in chunks), then yields tokens as they are generated: greedy by
 * default, sampled with `temperature` / `topK` / `topP` / `seed`. The last yielded token is not run
 * through the model, so it is not in the cache (as in Hugging Face `generate`). Another call that
 * writes to the row while the generator is suspended is a `ReentrancyError` at the next token.
 * @example
 * for await (const t of generate(model, cache, tokenizer.encode('Once upon'), { maxNewTokens: 32, tokenizer })) process.stdout.write(t.text!);
 */
export async function* generate(model: LlamaModel, cache: KVCachePolicy, prompt: readonly number[], options: GenerateOptions = {}): AsyncGenerator<GeneratedToken> {
  // NOTE: left to the options' defaults below, null or {} would be a TypeError reading model.config.
  if (model === null || typeof model !== 'object' || typeof model.config !== 'object' || model.config === null || typeof model.prefill !== 'function') throw new ConfigError(`generate: model must be a LlamaModel, got ${fmt(model)}`);
  checkKeys('generate options', options, GENERATE_KEYS);
  const { maxNewTokens = 64, stopTokens = model.config.eosTokenIds, sequence = 0, chunkTokens, onPrefill, tokenizer, signal, temperature, topK, topP, seed } = options;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new ConfigError(`generate: maxNewTokens must be an integer >= 0, got ${fmt(maxNewTokens)}`);
  checkSequenceOption('generate', sequence, cache);
  const stops = new Set(checkStops(stopTokens, model.config.vocabSize));
  if (tokenizer !== undefined && typeof tokenizer?.streamDecoder !== 'function') throw new ConfigError(`generate: tokenizer must be a Tokenizer, got ${fmt(tokenizer)}`);
  // NOTE: a stop token is the one the generation most surely ends on: a tokenizer that cannot write it
  // (a ByteTokenizer without the model's specials) would fail there, after the whole generation ran.
  const unwritable = typeof tokenizer?.vocabSize === 'number' ? [...stops].find((id) => id >= tokenizer.vocabSize) : undefined;
  if (unwritable !== undefined) throw new ConfigError(`generate: stop token ${unwritable} is outside the tokenizer's vocabulary [0, ${tokenizer!.vocabSize}); pass a tokenizer that has the model's special tokens, or stopTokens it can write`);
  if (onPrefill !== undefined && typeof onPrefill !== 'function') throw new ConfigError(`generate: onPrefill must be a function, got ${fmt(onPrefill)}`);
  const sampler = new Sampler(checkSampling('generate', { temperature, topK, topP, seed }));
  checkCacheSpec('generate', resolveSpec(model.spec), cache);
  // NOTE: a prompt that is not a list of ids, prefill refuses below.
  if (Number.isSafeInteger(prompt?.length)) {
    const stored = prompt.length + Math.max(0, maxNewTokens - 1);
    checkPositions('generate', model.config.maxPositions, cache, sequence, stored, `the prompt's ${prompt.length} tokens and maxNewTokens ${maxNewTokens} (all but the last generated token are stored)`);
  }
  const text = tokenizer?.streamDecoder();
  let logits: Float32Array;
  try {
    // NOTE: an already aborted signal goes in too: prefill checks every option and id, then stops before its first chunk.
    logits = model.prefill(prompt, cache, { sequence, chunkTokens, onProgress: onPrefill, signal });
  } catch (err) {
    if (signal?.aborted && err === signal.reason) return; // the prefill rolled its chunks back
    throw err;
  }
  let [held, written] = [cache.length(sequence), rowWrites(cache, sequence)];
  for (let index = 0; index < maxNewTokens && !signal?.aborted; index++) {
    const id = sampler.next(logits);
    const stop = stops.has(id);
    const last = stop || index + 1 === maxNewTokens;
    // NOTE: the last token's text ends the stream: a character its bytes leave unfinished comes out as
    // U+FFFD (as decode gives it), not dropped, so the texts joined are decode(ids).
    yield { id, index, stop, ...(text ? { text: text.push(id) + (last ? text.flush() : '') } : {}) };
    if (last || signal?.aborted) return;
    // NOTE: while the caller held the token, another generate or forward on this row (or a reset) may
    // have written to it: this token would then follow theirs, and the text be neither's. A reset and a
    // prompt as long as the row was leave the length as it was; the row's write count tells.
    const now = cache.length(sequence);
    if (now !== held) throw new ReentrancyError(`generate: cache row ${sequence} went from ${held} to ${now} tokens between two generated tokens; one generation per row at a time`);
    if (rowWrites(cache, sequence) !== written) throw new ReentrancyError(`generate: another call wrote to cache row ${sequence} between two generated tokens (it holds ${now} tokens, as before, but not these); one generation per row at a time`);
    logits = model.forward([id], cache, { sequence });
    [held, written] = [cache.length(sequence), rowWrites(cache, sequence)];
  }
}

/** Stop tokens as given, each an id of the vocabulary. */
function checkStops(stopTokens: unknown, vocabSize: number): readonly number[] {
  if (!Array.isArray(stopTokens)) throw new ConfigError(`generate: stopTokens must be a list of token ids, got ${fmt(stopTokens)}`);
  stopTokens.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new ConfigError(`generate: stopTokens[${i}] is ${fmt(id)}, not a token id in [0, ${vocabSize})`);
  });
  return stopTokens;
}
