/**
 * Capacity for `need` elements given `current`: an eighth more (at least `minStep`) at a time,
 * so appends stay amortized without doubling a long prompt's memory on its first growth, and never
 * past `limit` (what the cache's maxTokens needs), so that a declared size is the most a cache
 * allocates: the creation preflight and the pinned reserve count that (estimateMemory).
 */
export function growCapacity(need: number, current: number, minStep: number, limit: number): number {
  return Math.min(Math.max(need, current + Math.max(minStep, current >> 3)), Math.max(need, limit));
}

/**
 * Chunks a compressed store is first sized for: the prompt's, plus room for one compaction (the
 * local window and the recent region), so that steady decode does not grow it for a while; never
 * more than a row of `maxTokens` tokens stores. NOTE: without that bound, a recent region far past
 * maxTokens (maxRecentTokens 2^20 at maxTokens 200) sized every store for 2^20 tokens: ~1 GB of heap.
 */
export function storeChunks(chunks: number, o: { chunkSize: number; localTokens: number; maxRecentTokens: number }, maxTokens: number): number {
  return Math.min(chunks + Math.ceil((o.localTokens + o.maxRecentTokens) / o.chunkSize) + 1, Math.max(chunks, storedChunks(maxTokens, o)));
}

/** The whole chunks a row of `tokens` tokens stores once compressed (those past the local window). */
export function storedChunks(tokens: number, o: { chunkSize: number; localTokens: number }): number {
  return Math.max(0, Math.floor((tokens - o.localTokens) / o.chunkSize));
}
