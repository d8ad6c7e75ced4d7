#!/usr/bin/env bash
# Builds the CUDA addon of a git ref (a branch or a commit) for sm_90 only, for side-by-side timing
# on the GPU machine: ~10 MB (~3 MB packed) against the release build's 20, so that two or three fit
# beside the packed addon within the carry limit. The ref is checked out in a worktree under /tmp
# and compiled by scripts/build-cuda.sh (SKV_CUDA_SRC), so the current checkout and its build are
# left alone. Prints the addon's path, to pass on as
#   bash scripts/gpu/pack.sh --no-build --also NAME=<path>     then     bash scripts/gpu/ab.sh --addons packed,NAME
# Usage: bash scripts/gpu/build-ref.sh REF [NAME]   (NAME defaults to REF; build dir runtime/cuda/build-NAME)
# NOTE: the worktree's files are new each time, so every build compiles everything (~45 s on 2 cores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
usage="bash scripts/gpu/build-ref.sh REF [NAME]"
. scripts/args.sh
[ $# -ge 1 ] || usage_error "REF is missing"
[ $# -le 2 ] || usage_error "takes REF and NAME at most, got '$*'"
[[ "$1" != -* ]] || unknown_arg "$1"
ref=$1
name=${2:-$ref}
[[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || { echo "build-ref: NAME must be letters, digits, - or _ (got '$name'); pass one" >&2; exit 2; }
git rev-parse --verify -q "$ref^{commit}" >/dev/null || { echo "build-ref: $ref is not a commit here" >&2; exit 2; }
wt="/tmp/skv-ref-$name"
git worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
git worktree add -q --detach "$wt" "$ref"
trap 'git worktree remove --force "$wt"' EXIT
ln -s "$(pwd)/node_modules" "$wt/node_modules"  # CMakeLists.txt finds node-addon-api from its own tree
log="$wt.log"  # outside the tree: cmake-js clears its build dir
SKV_CUDA_SRC="$wt" SKV_CUDA_BUILD="build-$name" SKV_CUDA_ARCHS=90-real bash scripts/build-cuda.sh "${JOBS:-2}" >"$log" 2>&1 ||
  { tail -20 "$log" >&2; exit 1; }
echo "$(pwd)/runtime/cuda/build-$name/Release/shadowkv_cuda.node"
