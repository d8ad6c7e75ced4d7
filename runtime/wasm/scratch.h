// Scratch memory that lives for one call, taken from one reusable LIFO arena so that steady-state
// calls allocate nothing. Ops are void and the TS loader has no abort import, so running out of
// heap traps (a RuntimeError "unreachable" in JS) instead of computing garbage; the TS side then
// calls skv_scratch_reset, which says whether the trap was this one or another. skv_decode_layer reserves its scratch up front instead (scratch_reserve),
// so it fails with SKV_ERR_ALLOC before changing anything rather than trapping half-way.
// NOTE: the runtime is single-threaded and Scratch objects are scoped (RAII), so they are released
// in the reverse order of their creation: the arena is a stack with one top pointer.
#pragma once
#include <stddef.h>
#include <stdint.h>

// The largest block the runtime allocates: wasm32's size_t less the 16-byte rounding.
// NOTE: every allocation size is computed in 64 bits from the ints it comes from and checked
// against this, so that it fails cleanly instead of wrapping a 32-bit size_t (a D = 32768 Gram is
// exactly 4 GiB, which wraps to 0). The native build keeps the same limit, so its tests see what
// wasm32 does.
const uint64_t SKV_MAX_BLOCK = 0xFFFFFFF0u;
// Sizes saturate here (far above any heap), so that sums of a few of them cannot wrap uint64.
const uint64_t SKV_SIZE_CAP = (uint64_t)1 << 56;

// a * b, saturating at SKV_SIZE_CAP.
static inline uint64_t size_mul(uint64_t a, uint64_t b) {
  if (a == 0 || b == 0) return 0;
  return a > SKV_SIZE_CAP / b ? SKV_SIZE_CAP : a * b;
}

// Bytes a Scratch<T> of n elements takes: n = 0 counts as 1, rounded up to 16 (saturating).
template <typename T>
static inline uint64_t scratch_bytes(uint64_t n) {
  if (n > SKV_SIZE_CAP / sizeof(T)) return SKV_SIZE_CAP;
  return ((n ? n : 1) * sizeof(T) + 15) & ~(uint64_t)15;
}

// Counted 16-byte aligned heap allocation (memory.cc): every allocation the runtime makes goes
// through it, so that skv_alloc_count() sees them all. Null on failure, and for bytes over
// SKV_MAX_BLOCK; release with free().
void* skv_counted_alloc(uint64_t bytes);

// Arena blocks (memory.cc). scratch_push returns a 16-byte aligned block of at least `bytes`,
// from the arena if it fits, else from a counted malloc (*heap = true); it traps when the size is
// over SKV_MAX_BLOCK or the heap is full. scratch_pop releases the most recent live block.
void* scratch_push(uint64_t bytes, bool* heap);
// Traps (unreachable), marking the trap as an allocation that failed: skv_scratch_reset reports it,
// so that the TS side tells a full heap from any other trap.
[[noreturn]] void skv_trap_out_of_memory(void);
void scratch_pop(void* p, uint64_t bytes, bool heap);

// Grows the arena to at least `bytes` (one counted allocation, kept like any growth), so that
// scratch of up to that many bytes in total is taken without allocating. Only while no scratch is
// live; false (the arena possibly smaller than before) when it cannot.
bool scratch_reserve(uint64_t bytes);

template <typename T>
struct Scratch {
  T* p;
  uint64_t bytes;
  bool heap;
  explicit Scratch(uint64_t n) : bytes(scratch_bytes<T>(n)) { p = (T*)scratch_push(bytes, &heap); }
  ~Scratch() { scratch_pop(p, bytes, heap); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  operator T*() const { return p; }
};

// ---- test hooks (ops_test.cc; not exported) ----
// Counted allocations over `bytes` fail as if the heap were full; SKV_MAX_BLOCK restores the default.
void skv_test_alloc_limit(uint64_t bytes);
// The most scratch live at once since the last call (which restarts the count).
uint64_t skv_test_scratch_peak(void);
// Scratch blocks that did not fit the arena (each one a malloc), since the start.
double skv_test_scratch_heap_blocks(void);
// The scratch skv_decode_layer reserves for a step (decode_layer.cc); the step must be valid.
struct skv_layer_step;
uint64_t skv_decode_layer_scratch(const skv_layer_step& s);
