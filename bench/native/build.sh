#!/usr/bin/env bash
# Builds the native benchmark of the runtime ops into bench/native/out/bench_ops.
# Usage: bash bench/native/build.sh && bench/native/out/bench_ops
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mapfile -t SOURCES < <(bash "$HERE/../../runtime/wasm/build.sh" --sources)  # the wasm build's one list
mkdir -p "$HERE/out"
FLAGS=(
  -O3               # full optimization, like the wasm build
  -march=native     # this machine's vector units (the GCC-vector path of simd.h)
  -ffp-contract=fast  # let a*b+c become FMA, as native BLAS would
  -std=c++17        # the runtime's language
  -fno-exceptions   # as in the wasm build
)
g++ "${FLAGS[@]}" "${SOURCES[@]}" "$HERE/bench_ops.cc" -o "$HERE/out/bench_ops"
echo "built bench/native/out/bench_ops" >&2
