#!/usr/bin/env bash
# Builds the wasm runtime from one source list into runtime/wasm/out/:
#   shadowkv-simd.wasm (wasm SIMD micro-kernels) and shadowkv.wasm (scalar fallback of simd.h).
# Usage: bash runtime/wasm/build.sh [--dev]   --dev builds only the SIMD variant.
#        bash runtime/wasm/build.sh --sources prints the source list (the native bench uses it).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
usage="bash runtime/wasm/build.sh [--dev | --sources]"
. "$HERE/../../scripts/args.sh"
[ $# -le 1 ] || usage_error "takes one argument at most, got '$*'"
case "${1:-}" in
  ""|--dev|--sources) ;;
  *) unknown_arg "$1" ;;
esac

# The one source list: every op, one file each (ops_test.cc is native-only and not listed).
SOURCES=(memory.cc convert.cc convert_rows.cc gemm.cc rope.cc low_rank_keys.cc landmarks.cc keep_landmarks.cc pre_rope_keys.cc
         select_chunks.cc score_chunks.cc gather_values.cc quantize_values.cc pack_values.cc rebuild_keys.cc sparse_attention.cc
         causal_attention.cc decode_layer.cc linear.cc)

if [[ "${1:-}" == "--sources" ]]; then
  printf "$HERE/%s\n" "${SOURCES[@]}"
  exit 0
fi

# emcc's -O2/-O3 JS optimizer needs acorn, which Debian ships outside node's default path.
export NODE_PATH=/usr/share/nodejs

FLAGS=(
  -O3                              # full optimization, incl. loop unrolling of the micro-kernels
  -std=c++17                       # the language the runtime is written in
  -fno-exceptions                  # no exception tables or __cxa_* imports
  -fno-rtti                        # nothing needs typeid
  -DNDEBUG                         # no assert() in release builds (it would import fd_write)
  -sSTANDALONE_WASM                # a glue-free module; the TS loader instantiates it directly
  --no-entry                       # a library: no main, exports only
  -sASSERTIONS=0                   # no runtime checks that abort through imported functions
  -sALLOW_MEMORY_GROWTH=1          # heaps grow with the cache (calls to emscripten_notify_memory_growth)
  -sMAXIMUM_MEMORY=4GB             # wasm32's whole address space (a 128K-token layer is ~1 GB)
  -sINITIAL_MEMORY=16MB            # small start; growth does the rest
  -sFILESYSTEM=0                   # no stdio/files in the runtime
  -sERROR_ON_UNDEFINED_SYMBOLS=1   # a missing symbol is a build error, not a surprise import
)

cd "$HERE"
mkdir -p out
build() {  # build <output> <extra flags...>
  local out="$1"; shift
  emcc "${FLAGS[@]}" "$@" "${SOURCES[@]}" -o "out/$out"
  echo "built runtime/wasm/out/$out ($(stat -c %s "out/$out") bytes)"
}
build shadowkv-simd.wasm -msimd128  # 128-bit wasm SIMD: the hand-written f32x4 kernels
if [[ "${1:-}" != "--dev" ]]; then
  build shadowkv.wasm               # no SIMD: simd.h's scalar path, for engines without it
fi
