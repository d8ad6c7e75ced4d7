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

/**
 * The hot-value cache's part of a step for one kv head (runtime/wasm/reuse_slots.h `hot_slots`):
 * chunk c may sit only in slot `c % hot.length`. Per miss (ascending ids), a code: `>= 0` the
 * slot it is copied from (a hot hit); `-1` fetched from the host; `<= -2` fetched, then kept in
 * slot `-2 - code`. A fetched miss takes its slot unless this step's hot hit sits there; of two
 * fetched misses for one slot the larger id keeps it. `hot` (chunk id per slot, -1 empty) is updated.
 */
export function hotSlots(hot: Int32Array, missIds: Int32Array): Int32Array {
  const P = hot.length;
  const misses = new Set(missIds);
  // NOTE: a resident that is a miss of this step sits in its own slot, so it is a hot hit.
  const codes = missIds.map((id) => (hot[id % P] === id ? id % P : misses.has(hot[id % P]!) ? -1 : -2 - (id % P)));
  missIds.forEach((id, i) => {
    if (codes[i]! <= -2) hot[-2 - codes[i]!] = id;
  });
  missIds.forEach((id, i) => {
    if (codes[i]! <= -2 && hot[-2 - codes[i]!] !== id) codes[i] = -1;
  });
  return codes;
}
