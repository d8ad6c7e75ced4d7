/**
 * Capacity for `need` elements given `current`: an eighth more (at least `minStep`) at a time,
 * so appends stay amortized without doubling a long prompt's memory on its first growth.
 */
export function growCapacity(need: number, current: number, minStep: number): number {
  return Math.max(need, current + Math.max(minStep, current >> 3));
}
