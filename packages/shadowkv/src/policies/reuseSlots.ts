/** What a step must bring to the device: chunk ids and the slots they go to. */
export interface SlotPlan {
  missIds: Int32Array;
  missSlots: Int32Array;
  hits: number;
}

/**
 * Keeps chunks selected at the previous step in their slots (hits) and gives misses the slots of
 * chunks no longer selected, then fresh slots. `selected[slot]` holds chunk ids; updated in place.
 * NOTE: the selected count never shrinks between compressions, so slots `[0, count)` stay filled
 * and the selected region is one contiguous segment for attention.
 */
export function reuseSlots(selected: Int32Array, count: number, ids: Int32Array): SlotPlan {
  const want = new Set(ids);
  const held = new Set<number>();
  const free: number[] = [];
  for (let slot = 0; slot < count; slot++) {
    if (want.has(selected[slot]!)) held.add(selected[slot]!);
    else free.push(slot);
  }
  for (let slot = count; slot < ids.length; slot++) free.push(slot);
  let next = 0;
  const missIds: number[] = [];
  const missSlots: number[] = [];
  for (const id of ids) {
    if (held.has(id)) continue;
    const slot = free[next++]!;
    selected[slot] = id;
    missIds.push(id);
    missSlots.push(slot);
  }
  return { missIds: Int32Array.from(missIds), missSlots: Int32Array.from(missSlots), hits: held.size };
}
