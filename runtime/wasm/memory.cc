// Heap allocation: the buffers the TS side hands to ops (skv_malloc), and the scratch arena that
// every op's temporaries come from (scratch.h).
#include <assert.h>
#include <stdlib.h>
#include "abi.h"
#include "scratch.h"

namespace {

double alloc_count = 0;           // allocations made so far (skv_alloc_count)
double heap_blocks = 0;           // scratch blocks that did not fit the arena
uint64_t alloc_limit = SKV_MAX_BLOCK;  // test hook: larger allocations fail
bool alloc_trapped = false;       // the trap being recovered from was skv_trap_out_of_memory

// NOTE: the arena stops growing by itself at 64 MiB: bigger one-off needs (rebuilding a whole
// 128K prompt) stay per-call mallocs, so the heap does not keep them. scratch_reserve may grow it
// further: a decode step's needs recur every step.
const uint64_t ARENA_MAX = (uint64_t)64 << 20;

// NOTE: sizes are uint64_t so that sums of live blocks cannot wrap a 32-bit size_t either.
struct Arena {
  char* base = nullptr;
  uint64_t size = 0;  // bytes at base
  uint64_t top = 0;   // bytes in use at base
  uint64_t need = 0;  // bytes live scratch would take if all of it were in the arena
  uint64_t high = 0;  // the most `need` reached since the arena was last empty
  uint64_t peak = 0;  // the same since skv_test_scratch_peak last read it
} arena;

uint64_t round16(uint64_t bytes) { return (bytes + 15) & ~(uint64_t)15; }

// Replaces the arena (nothing may be live) with a new one of `want` bytes; on failure it is empty.
bool regrow(uint64_t want) {
  free(arena.base);  // the old contents are dead: nothing is live
  arena.base = (char*)skv_counted_alloc(want);
  arena.size = arena.base ? want : 0;
  return arena.base != nullptr;
}

// Called when the outermost scratch is released: make the next call of the same shape fit.
void grow_if_short() {
  uint64_t want = arena.high < ARENA_MAX ? arena.high : ARENA_MAX;
  arena.high = 0;
  if (want > arena.size) regrow(want);  // a failed growth only means more per-call mallocs
}

}  // namespace

void* skv_counted_alloc(uint64_t bytes) {
  // NOTE: checked in 64 bits before anything narrows to size_t; SKV_MAX_BLOCK is a multiple of 16.
  if (bytes > SKV_MAX_BLOCK || bytes > alloc_limit) return nullptr;
  // 16-byte alignment so that f32 rows can be viewed as Float32Array and v128 loads align.
  size_t rounded = (size_t)round16(bytes ? bytes : 16);
  void* p = aligned_alloc(16, rounded);
  if (p) alloc_count += 1;
  return p;
}

void skv_trap_out_of_memory(void) {
  alloc_trapped = true;
  __builtin_trap();
}

void* scratch_push(uint64_t bytes, bool* heap) {
  if (bytes > SKV_MAX_BLOCK) skv_trap_out_of_memory();  // no wasm32 heap can hold it
  uint64_t rounded = round16(bytes);
  arena.need += rounded;
  if (arena.need > arena.high) arena.high = arena.need;
  if (arena.need > arena.peak) arena.peak = arena.need;
  *heap = arena.size - arena.top < rounded;
  if (!*heap) {
    void* p = arena.base + arena.top;
    arena.top += rounded;
    return p;
  }
  heap_blocks += 1;
  void* p = skv_counted_alloc(rounded);
  if (!p) skv_trap_out_of_memory();
  return p;
}

void scratch_pop(void* p, uint64_t bytes, bool heap) {
  uint64_t rounded = round16(bytes);
  arena.need -= rounded;
  if (heap) {
    free(p);
  } else {
    assert((char*)p + rounded == arena.base + arena.top);  // LIFO
    arena.top = (uint64_t)((char*)p - arena.base);
  }
  if (arena.need == 0) grow_if_short();
}

bool scratch_reserve(uint64_t bytes) {
  if (arena.top != 0 || arena.need != 0) return false;  // live scratch (or a trap not yet reset)
  if (bytes <= arena.size) return true;
  if (bytes > SKV_MAX_BLOCK) return false;
  // A quarter of headroom, so that slowly growing needs (landmarks) do not regrow every step;
  // exactly `bytes` if the heap cannot spare that.
  uint64_t roomy = round16(bytes + bytes / 4);
  if (roomy <= SKV_MAX_BLOCK && regrow(roomy)) return true;
  return regrow(round16(bytes));
}

SKV_EXPORT void* skv_malloc(size_t bytes) { return skv_counted_alloc(bytes); }

SKV_EXPORT void skv_free(void* p) { free(p); }

SKV_EXPORT double skv_alloc_count(void) { return alloc_count; }

SKV_EXPORT int skv_scratch_reset(void) {
  // A trap skipped the Scratch destructors: nothing is live now, whatever the counters say. Blocks
  // that scratch had taken from the heap stay allocated (nothing records them): a leak that is
  // acceptable after an out-of-memory trap. The arena itself is kept.
  arena.top = arena.need = arena.high = 0;
  int status = alloc_trapped ? SKV_ERR_ALLOC : SKV_OK;
  alloc_trapped = false;
  return status;
}

void skv_test_alloc_limit(uint64_t bytes) { alloc_limit = bytes; }

uint64_t skv_test_scratch_peak(void) {
  uint64_t p = arena.peak;
  arena.peak = arena.need;
  return p;
}

double skv_test_scratch_heap_blocks(void) { return heap_blocks; }
