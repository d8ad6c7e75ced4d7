#!/usr/bin/env bash
# Builds the CUDA addon of a git ref (a branch or a commit) for sm_90 only, for side-by-side timing
# on the GPU machine: ~10 MB (~3 MB packed) against the release build's 20, so that two or three fit
# beside the packed addon within the carry limit. The ref is checked out in a worktree under /tmp,
# so the current checkout and its build are left alone. Prints the addon's path, to pass on as
#   bash scripts/gpu/pack.sh --no-build --also NAME=<path>     then     bash scripts/gpu/ab.sh --addons packed,NAME
# Usage: bash scripts/gpu/build-ref.sh REF [NAME]   (NAME defaults to REF; build dir runtime/cuda/build-NAME)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ref=${1:?usage: bash scripts/gpu/build-ref.sh REF [NAME]}
name=${2:-$ref}
[[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || { echo "build-ref: NAME must be letters, digits, - or _ (got '$name'); pass one" >&2; exit 2; }
git rev-parse --verify -q "$ref^{commit}" >/dev/null || { echo "build-ref: $ref is not a commit here" >&2; exit 2; }
command -v nvcc >/dev/null || export CUDACXX="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
root=$(pwd) wt="/tmp/skv-ref-$name" out="$(pwd)/runtime/cuda/build-$name"
git worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
git worktree add -q --detach "$wt" "$ref"
trap 'git -C "$root" worktree remove --force "$wt"' EXIT
ln -s "$root/node_modules" "$wt/node_modules"
mkdir -p "$out"
# NOTE: the worktree's files are new each time, so every build compiles everything (~45 s on 2 cores).
(cd "$wt/packages/shadowkv-cuda" && CMAKE_BUILD_PARALLEL_LEVEL="${JOBS:-2}" npx --no-install cmake-js compile \
  --directory ../../runtime/cuda --out "$out" --config Release --parallel "${JOBS:-2}" \
  --CDCMAKE_CUDA_ARCHITECTURES=90-real) >"$out/build-ref.log" 2>&1 || { tail -20 "$out/build-ref.log" >&2; exit 1; }
addon="$out/Release/shadowkv_cuda.node"
if ldd "$addon" | grep -E 'libcuda\.so|libcudart\.so'; then
  echo "build-ref: $addon links CUDA dynamically; it must use cudart_static and no libcuda" >&2
  exit 1
fi
echo "$addon"
