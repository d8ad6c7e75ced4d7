#!/usr/bin/env bash
# Builds the CUDA addon (runtime/cuda/*.cc + kernels/*.cu) with cmake-js from packages/shadowkv-cuda,
# Release, into runtime/cuda/build/Release/shadowkv_cuda.node, then checks that it links neither
# libcuda nor the shared CUDA runtime (so it loads, and says "no device", on machines without a GPU).
# Needs nvcc (CUDA 13), cmake, and `npm install` (cmake-js, node-addon-api). Not part of
# scripts/test.sh or CI: CI machines have no CUDA compiler.
# Usage: bash scripts/build-cuda.sh [jobs]   parallel compile jobs, default 2
# SKV_CUDA_BUILD=<dir under runtime/cuda> builds elsewhere (two builds at once must not share one);
# SKV_CUDA_SRC=<a checkout's root> compiles that checkout's sources (scripts/gpu/build-ref.sh: a
# worktree), still into this one's runtime/cuda; SKV_CUDA_ARCHS=<CMAKE_CUDA_ARCHITECTURES> other
# GPU targets than CMakeLists.txt's (e.g. 90-real alone: half the size).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
usage="bash scripts/build-cuda.sh [jobs]"
. scripts/args.sh
[ $# -le 1 ] || usage_error "takes one argument at most, got '$*'"
need_positive jobs "${1:-2}"
JOBS="${1:-2}"
export CMAKE_BUILD_PARALLEL_LEVEL="$JOBS"
command -v nvcc >/dev/null || export CUDACXX="${CUDACXX:-/usr/local/cuda/bin/nvcc}"

BUILD="${SKV_CUDA_BUILD:-build}"
SRC="$(cd "${SKV_CUDA_SRC:-.}" && pwd)"
ARCHS=()
[ -z "${SKV_CUDA_ARCHS:-}" ] || ARCHS=("--CDCMAKE_CUDA_ARCHITECTURES=$SKV_CUDA_ARCHS")

(cd packages/shadowkv-cuda && npx --no-install cmake-js compile \
  --directory "$SRC/runtime/cuda" --out "../../runtime/cuda/$BUILD" --config Release --parallel "$JOBS" ${ARCHS[@]+"${ARCHS[@]}"})

addon="runtime/cuda/$BUILD/Release/shadowkv_cuda.node"
[ -f "$addon" ] || { echo "build-cuda: $addon was not produced" >&2; exit 1; }
if ldd "$addon" | grep -E 'libcuda\.so|libcudart\.so'; then
  echo "build-cuda: $addon links CUDA dynamically; it must use cudart_static and no libcuda" >&2
  exit 1
fi
echo "build-cuda: $addon ($(du -h "$addon" | cut -f1)), links: $(ldd "$addon" | awk '{print $1}' | tr '\n' ' ')"
