#!/usr/bin/env bash
# Builds the native benchmark of the runtime ops into bench/native/out/bench_ops, and the one of
# low_rank_keys' float64 host steps (old against new, one thread and host threads) into
# bench/native/out/low_rank_host.
# Usage: bash bench/native/build.sh && bench/native/out/bench_ops && bench/native/out/low_rank_host
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
usage="bash bench/native/build.sh"
. "$HERE/../../scripts/args.sh"
no_args "$@"
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
# The host steps as the CUDA addon compiles them: -O3 for baseline x86-64 (SSE2, no FMA), plus threads.
# The old ones (before the blocked rewrite) come from git, not from a copy kept in the tree.
mkdir -p "$HERE/out/v1"
for f in subspace.h jacobi.h; do git -C "$HERE" show "2d4f16f:runtime/wasm/$f" > "$HERE/out/v1/$f"; done
g++ -O3 -std=c++17 -fno-exceptions "${SOURCES[@]}" "$HERE/low_rank_host.cc" -o "$HERE/out/low_rank_host"
echo "built bench/native/out/low_rank_host" >&2
