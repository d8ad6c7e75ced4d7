#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored) for a test run on the GPU machine, which has no Node.js and no
# network: the addon built here, the wasm runtime built here, this machine's Node binary, and
# node_modules without the packages only builds and docs need (the last two xz-compressed). The run carries it with carry: [".gpu"]
# (64 MiB at most with the working tree) and runs scripts/gpu/run-tests.sh or scripts/gpu/parity.sh.
# --slim packs only what scripts (not the test suites) need: Node, the addon and tsx, xz-compressed,
# and of node_modules only msgpackr (~31 MB instead of ~57), so a 27 MB model fits beside it
# (scripts/gpu/eval.sh).
# --also NAME=PATH (repeatable) packs another built addon beside this one, for side-by-side timing on
# the GPU machine (scripts/gpu/ab.sh): env.sh unpacks it to /tmp/skv-node/addon-NAME.node.
# Usage: bash scripts/gpu/pack.sh [--no-build] [--slim] [--also NAME=PATH ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
usage="bash scripts/gpu/pack.sh [--no-build] [--slim] [--also NAME=PATH ...]"
. scripts/args.sh
build=1 slim=0
also=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --slim) slim=1 ;;
    --also)
      need_value "$@"
      [[ "$2" =~ ^[A-Za-z0-9_-]+=.+ ]] && [ -f "${2#*=}" ] || usage_error "--also needs NAME=PATH of a built addon, got '$2'"
      also+=("$2"); shift ;;
    *) unknown_arg "$1" ;;
  esac
  shift
done
[ "$build" = 0 ] || bash scripts/build-cuda.sh 2

rm -rf .gpu && mkdir -p .gpu
addon="runtime/cuda/${SKV_CUDA_BUILD:-build}/Release/shadowkv_cuda.node"
mkdir -p .gpu/wasm && cp runtime/wasm/out/*.wasm .gpu/wasm/  # the wasm envs and the parity suite run there too
xz -T2 -6 -c "$(readlink -f "$(command -v node)")" > .gpu/node.xz
xz -T2 -6 -c "$addon" > .gpu/shadowkv_cuda.node.xz  # 21 MB, 4 compressed
for a in ${also[@]+"${also[@]}"}; do xz -T2 -6 -c "${a#*=}" > ".gpu/addon-${a%%=*}.node.xz"; done
if [ "$slim" = 1 ]; then
  # tsx (with its own esbuild) and msgpackr, with what they require at run time (package-lock.json),
  # and the workspace links npm install makes (the cuda backend imports 'shadowkv-cuda' by name)
  tar -c node_modules/tsx node_modules/get-tsconfig node_modules/resolve-pkg-maps node_modules/msgpackr \
    node_modules/shadowkv node_modules/shadowkv-cuda node_modules/shadowkv-llama | xz -T2 -6 > .gpu/scripts.tar.xz
  git rev-parse HEAD > .gpu/commit 2>/dev/null || rm -f .gpu/commit
  du -sh .gpu
  exit 0
fi
# Only what vitest needs at run time: no compilers, bundlers, docs tools or addon build tools.
tar -c --exclude='node_modules/typescript' --exclude='node_modules/typedoc' --exclude='node_modules/@shikijs' \
  --exclude='node_modules/@gerrit0' --exclude='node_modules/lunr' --exclude='node_modules/markdown-it' \
  --exclude='node_modules/tsup' --exclude='node_modules/sucrase' --exclude='node_modules/tsx' \
  --exclude='node_modules/cmake-js' --exclude='node_modules/node-addon-api' --exclude='node_modules/node-api-headers' \
  --exclude='node_modules/.cache' node_modules | xz -T2 -6 > .gpu/node_modules.tar.xz
# tsx (with its own esbuild) for bench/parity.ts (scripts/gpu/parity.sh); apart, so the test run unpacks no more than before.
tar -c node_modules/tsx | xz -T2 -6 > .gpu/tsx.tar.xz
git rev-parse HEAD > .gpu/commit 2>/dev/null || rm -f .gpu/commit  # the GPU machine has no git: parity.json's commit
du -sh .gpu/*
du -sh .gpu
total=$(du -sb .gpu | cut -f1)
[ "$total" -lt $((60 * 1024 * 1024)) ] || { echo "pack: .gpu is $total bytes, over the 64 MiB carry limit with the tree" >&2; exit 1; }
