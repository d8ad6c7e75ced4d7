// Scratch memory that lives for one call, taken from one reusable LIFO arena so that steady-state
// calls allocate nothing. Ops are void and the TS loader has no abort import, so running out of
// heap traps (a RuntimeError "unreachable" in JS) instead of computing garbage.
// NOTE: the runtime is single-threaded and Scratch objects are scoped (RAII), so they are released
// in the reverse order of their creation: the arena is a stack with one top pointer.
#pragma once
#include <stddef.h>

// Counted 16-byte aligned heap allocation (memory.cc): every allocation the runtime makes goes
// through it, so that skv_alloc_count() sees them all. Null on failure; release with free().
void* skv_counted_alloc(size_t bytes);

// Arena blocks (memory.cc). scratch_push returns a 16-byte aligned block of at least `bytes`,
// from the arena if it fits, else from a counted malloc (*heap = true); it traps when out of memory.
// scratch_pop releases the most recent live block.
void* scratch_push(size_t bytes, bool* heap);
void scratch_pop(void* p, size_t bytes, bool heap);

template <typename T>
struct Scratch {
  T* p;
  size_t bytes;
  bool heap;
  explicit Scratch(size_t n) : bytes((n ? n : 1) * sizeof(T)) { p = (T*)scratch_push(bytes, &heap); }
  ~Scratch() { scratch_pop(p, bytes, heap); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  operator T*() const { return p; }
};
