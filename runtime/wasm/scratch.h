// Scratch memory that lives for one call. Ops are void and the TS loader has no abort import, so
// running out of heap traps (a RuntimeError "unreachable" in JS) instead of computing garbage.
#pragma once
#include <stdlib.h>

template <typename T>
struct Scratch {
  T* p;
  explicit Scratch(size_t n) : p((T*)malloc((n ? n : 1) * sizeof(T) + 16)) {
    if (!p) __builtin_trap();
  }
  ~Scratch() { free(p); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  operator T*() const { return p; }
};
