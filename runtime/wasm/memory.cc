// Heap allocation: the buffers the TS side hands to ops (skv_malloc), and the scratch arena that
// every op's temporaries come from (scratch.h).
#include <assert.h>
#include <stdlib.h>
#include "abi.h"
#include "scratch.h"

namespace {

double alloc_count = 0;  // allocations made so far (skv_alloc_count)

// NOTE: the arena stops growing at 64 MiB: bigger one-off needs (rebuilding a whole 128K prompt)
// stay per-call mallocs, so the heap does not keep them.
const size_t ARENA_MAX = (size_t)64 << 20;

struct Arena {
  char* base = nullptr;
  size_t size = 0;  // bytes at base
  size_t top = 0;   // bytes in use at base
  size_t need = 0;  // bytes live scratch would take if all of it were in the arena
  size_t high = 0;  // the most `need` reached since the arena was last empty
} arena;

size_t round16(size_t bytes) { return (bytes + 15) & ~(size_t)15; }

// Called when the outermost scratch is released: make the next call of the same shape fit.
void grow_if_short() {
  size_t want = arena.high < ARENA_MAX ? arena.high : ARENA_MAX;
  arena.high = 0;
  if (want <= arena.size) return;
  free(arena.base);  // the old contents are dead: nothing is live
  arena.base = (char*)skv_counted_alloc(want);
  arena.size = arena.base ? want : 0;  // a failed growth only means more per-call mallocs
}

}  // namespace

void* skv_counted_alloc(size_t bytes) {
  // NOTE: 16-byte alignment so that f32 rows can be viewed as Float32Array and v128 loads align.
  size_t rounded = round16(bytes);
  if (rounded < bytes) return nullptr;  // size_t overflow
  void* p = aligned_alloc(16, rounded ? rounded : 16);
  if (p) alloc_count += 1;
  return p;
}

void* scratch_push(size_t bytes, bool* heap) {
  size_t rounded = round16(bytes);
  if (rounded < bytes) __builtin_trap();  // size_t overflow
  arena.need += rounded;
  if (arena.need > arena.high) arena.high = arena.need;
  *heap = arena.size - arena.top < rounded;
  if (!*heap) {
    void* p = arena.base + arena.top;
    arena.top += rounded;
    return p;
  }
  void* p = skv_counted_alloc(rounded);
  if (!p) __builtin_trap();
  return p;
}

void scratch_pop(void* p, size_t bytes, bool heap) {
  size_t rounded = round16(bytes);
  arena.need -= rounded;
  if (heap) {
    free(p);
  } else {
    assert((char*)p + rounded == arena.base + arena.top);  // LIFO
    arena.top = (size_t)((char*)p - arena.base);
  }
  if (arena.need == 0) grow_if_short();
}

SKV_EXPORT void* skv_malloc(size_t bytes) { return skv_counted_alloc(bytes); }

SKV_EXPORT void skv_free(void* p) { free(p); }

SKV_EXPORT double skv_alloc_count(void) { return alloc_count; }
