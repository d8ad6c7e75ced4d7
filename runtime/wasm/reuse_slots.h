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
