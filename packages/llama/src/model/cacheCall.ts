// What every LlamaModel call on a cache checks first and undoes on failure: the cache was made for
// this model's geometry, the row has positions left, and a rejected call leaves the cache row as it was.
import { CapacityError } from '../../../shadowkv/src/errors/CapacityError.js';
import { ConfigError } from '../../../shadowkv/src/errors/ConfigError.js';
import { SequenceIndexError } from '../../../shadowkv/src/errors/SequenceIndexError.js';
import type { KVCachePolicy } from '../../../shadowkv/src/policies/KVCachePolicy.js';
import { fmt } from '../../../shadowkv/src/policies/validate.js';
import type { ResolvedSpec } from '../../../shadowkv/src/spec.js';

/** The spec fields that decide what a cache computes (layers, heads, scale, RoPE), by name, as text to compare and show. */
function specFields(s: ResolvedSpec): [string, string][] {
  const r = s.rope.scaling;
  const scaling = r ? `{ factor: ${r.factor}, lowFreqFactor: ${r.lowFreqFactor}, highFreqFactor: ${r.highFreqFactor}, originalMaxPositions: ${r.originalMaxPositions} }` : 'none';
  return [
    ['layers', String(s.layers)], ['queryHeads', String(s.queryHeads)], ['kvHeads', String(s.kvHeads)], ['headDim', String(s.headDim)], ['scale', String(s.scale)],
    ['rope.theta', String(s.rope.theta)], ['rope.style', `'${s.rope.style}'`], ['rope.scaling', scaling],
  ];
}

/**
 * Throws a ConfigError naming the first spec field where `cache` differs from the model: a cache made
 * for another RoPE or scale would attend wrongly without an error, one of other layers fail half-way.
 */
export function checkCacheSpec(call: string, model: ResolvedSpec, cache: KVCachePolicy): void {
  if (cache === null || typeof cache !== 'object' || cache.spec === null || typeof cache.spec !== 'object') throw new ConfigError(`${call}: the cache must be a KVCachePolicy (a shadowkv cache), got ${fmt(cache)}`);
  const got = specFields(cache.spec);
  for (const [i, [field, want]] of specFields(model).entries()) {
    const value = got[i]![1];
    if (value !== want) throw new ConfigError(`${call}: the cache was made for spec.${field} ${value}, but this model's is ${want}; create the cache with { spec: model.spec }`);
  }
}

/**
 * Throws a ConfigError unless the `sequence` option is an integer, and a SequenceIndexError unless it is
 * one of the cache's rows, both naming `call`: left to the cache, either would be refused as an error
 * of the cache call it first reaches (`length()`).
 */
export function checkSequenceOption(call: string, sequence: unknown, cache: KVCachePolicy): asserts sequence is number {
  if (!Number.isSafeInteger(sequence)) throw new ConfigError(`${call}: sequence must be an integer (a cache row), got ${fmt(sequence)}`);
  const rows = (cache as Partial<KVCachePolicy> | null)?.batch; // NOTE: what is not a cache, checkCacheSpec refuses after the options
  if (typeof rows === 'number' && ((sequence as number) < 0 || (sequence as number) >= rows)) throw new SequenceIndexError(`${call}: sequence ${sequence} is outside the cache's rows [0, ${rows})`);
}

/**
 * Throws a CapacityError, naming `call`, unless cache row `sequence` has room for `tokens` more
 * positions under the model's `maxPositions` (max_position_embeddings): RoPE past it rotates by
 * angles the model never trained on, and its output degrades without any error. `what` says what
 * asks for the positions. Reads the row only: checked before anything is written.
 */
export function checkPositions(call: string, maxPositions: number, cache: KVCachePolicy, sequence: number, tokens: number, what = `${tokens} tokens`): void {
  const held = cache.length(sequence);
  if (held + tokens > maxPositions) {
    throw new CapacityError(`${call}: cache row ${sequence} holds ${held} tokens and ${what} would take it to ${held + tokens} positions, past the model's maxPositions ${maxPositions} (max_position_embeddings: RoPE beyond it is a context the model never saw)`);
  }
}

// Per cache, per row: how many LlamaModel calls (of any model) have stored tokens there.
const writes = new WeakMap<KVCachePolicy, Map<number, number>>();

/**
 * How many `LlamaModel` calls have written to cache row `sequence` so far. A caller that holds the row
 * between calls compares it as well as the length: a reset and a prompt of the same length refilled
 * the row with other tokens, and the length alone cannot tell.
 */
export function rowWrites(cache: KVCachePolicy, sequence: number): number {
  return writes.get(cache)?.get(sequence) ?? 0;
}

/**
 * Runs `body`, which stores tokens in `cache` row `sequence`; if it throws, the row goes back to the
 * length it had (every layer), and the error is rethrown: a rejected call leaves the cache as it was.
 * A call that returns counts as a write (`rowWrites`).
 */
export function rollingBack<T>(cache: KVCachePolicy, sequence: number, body: () => T): T {
  const before = cache.length(sequence); // also checks `sequence`
  let result: T;
  try {
    result = body();
  } catch (err) {
    rollBack(cache, sequence, before, err);
    throw err;
  }
  const rows = writes.get(cache) ?? writes.set(cache, new Map()).get(cache)!;
  rows.set(sequence, (rows.get(sequence) ?? 0) + 1);
  return result;
}

function rollBack(cache: KVCachePolicy, sequence: number, before: number, err: unknown): void {
  let moved: boolean;
  try {
    moved = Array.from({ length: cache.spec.layers }, (_, l) => cache.length(sequence, l)).some((n) => n !== before);
  } catch {
    return; // the cache cannot be read (disposed, or busy with a call this one nests in): the error says so
  }
  if (!moved) return;
  try {
    if (before === 0) cache.reset(sequence);
    else cache.crop(sequence, before);
  } catch (undo) {
    // NOTE: crop keeps exact tokens only, so a compressed ShadowKV row that compacted during the call cannot go back.
    if (err instanceof Error) err.message += `; the row could not be rolled back (${(undo as Error).message}): reset it`;
  }
}
