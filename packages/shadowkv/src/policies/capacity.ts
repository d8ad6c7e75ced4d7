/**
 * Capacity for `need` elements given `current`: an eighth more (at least `minStep`) at a time,
 * so appends stay amortized without doubling a long prompt's memory on its first growth.
 */
export function growCapacity(need: number, current: number, minStep: number): number {
  return Math.max(need, current + Math.max(minStep, current >> 3));
}

/**
 * Chunks a compressed store is first sized for: the prompt's, plus room for one compaction (the
 * local window and the recent region), so that steady decode does not grow it for a while.
 */
export function storeChunks(chunks: number, o: { chunkSize: number; localTokens: number; maxRecentTokens: number }): number {
  return chunks + Math.ceil((o.localTokens + o.maxRecentTokens) / o.chunkSize) + 1;
}
