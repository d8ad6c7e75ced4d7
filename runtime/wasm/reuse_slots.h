// Slot reuse for one kv head, the C twin of packages/shadowkv/src/policies/reuseSlots.ts.
#pragma once
#include <stdint.h>
#include <string.h>
#include <algorithm>
#include "scratch.h"

// Chunks selected at the previous step keep their slots (hits); each miss takes the next free slot:
// first the slots [0, count) whose chunk is no longer selected, then the fresh slots [count, m).
// selected: chunk id per slot, slots [0, count) filled, count <= m; updated in place so that
// slots [0, m) hold exactly ids. ids [m]: this step's chunks, ascending. Writes the misses to
// miss_ids / miss_slots [m], their count to *n_miss, and returns the hits.
// NOTE: slots [0, m) stay filled, so the selected chunks are one contiguous attention segment.
static inline int reuse_slots(int32_t* selected, int count, const int32_t* ids, int m,
                              int32_t* miss_ids, int32_t* miss_slots, int* n_miss) {
  Scratch<uint8_t> held(m);        // [m] ids[i] already sits in a slot
  Scratch<int32_t> free_slots(m);  // [m] slots to refill, in order
  memset(held, 0, (size_t)m);
  int hits = 0, nfree = 0;
  for (int slot = 0; slot < count; slot++) {
    const int32_t* it = std::lower_bound(ids, ids + m, selected[slot]);
    if (it != ids + m && *it == selected[slot] && !held[it - ids]) {
      held[it - ids] = 1;
      hits++;
    } else {
      free_slots[nfree++] = slot;
    }
  }
  for (int slot = count; slot < m; slot++) free_slots[nfree++] = slot;
  int n = 0;  // nfree == m - hits == the number of misses
  for (int i = 0; i < m; i++) {
    if (held[i]) continue;
    selected[free_slots[n]] = ids[i];
    miss_ids[n] = ids[i];
    miss_slots[n] = free_slots[n];
    n++;
  }
  *n_miss = n;
  return hits;
}

// Scratch bytes of reuse_slots for m selected chunks: held, free_slots (skv_decode_layer reserves them).
static inline uint64_t reuse_slots_bytes(uint64_t m) { return scratch_bytes<uint8_t>(m) + scratch_bytes<int32_t>(m); }

// The hot-value cache's part of a step for one kv head, the C twin of hotSlots in reuseSlots.ts:
// chunk c may sit only in hot[c % P]. miss_ids [n] ascending. Per miss a code: >= 0 the slot it
// is copied from (a hot hit), -1 fetched from the host, <= -2 fetched and then kept in slot
// -2 - code. A fetched miss takes its slot unless this step's hot hit sits there; of two fetched
// misses for one slot, the larger id keeps it. hot (chunk id per slot, -1 empty) is updated.
// Returns the hot hits.
// NOTE: a resident that is a miss of this step sits in its own slot, so it is a hot hit.
static inline int hot_slots(int32_t* hot, int P, const int32_t* miss_ids, int n, int32_t* codes) {
  int hits = 0;
  for (int i = 0; i < n; i++) {
    const int32_t id = miss_ids[i], p = id % P, r = hot[p];
    codes[i] = r == id ? p : std::binary_search(miss_ids, miss_ids + n, r) ? -1 : -2 - p;
    hits += r == id;
  }
  for (int i = 0; i < n; i++)
    if (codes[i] <= -2) hot[-2 - codes[i]] = miss_ids[i];
  for (int i = 0; i < n; i++)
    if (codes[i] <= -2 && hot[-2 - codes[i]] != miss_ids[i]) codes[i] = -1;
  return hits;
}
