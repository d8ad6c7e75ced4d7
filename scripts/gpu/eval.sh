#!/usr/bin/env bash
# The accuracy evaluation (`npm run eval`, issue 8) on the GPU machine: caches and the model's
# projections on CUDA (--backend cuda), so 32K prompts take seconds instead of the CPU's minutes.
# Expects `bash scripts/gpu/pack.sh --slim` (carry: [".gpu"]): with the full pack the 27 MB model
# does not fit the 64 MiB a call carries. Writes $OUT/eval.json, .md, .svg and $OUT/eval.log.
# Arguments go to bench/eval/main.ts after the defaults below (a later --lengths or --samples wins).
# Usage: bash scripts/gpu/eval.sh [--model models/skv-small] [main.ts args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export SHADOWKV_CUDA_SYNC="${SHADOWKV_CUDA_SYNC:-0}"  # no sync per op: the evaluation times nothing, but waits would slow it
. scripts/gpu/env.sh
need_tsx eval
out="${OUT:-bench/results}"
mkdir -p "$out"
nvidia-smi -L || true
echo "node $(node --version), addon $SHADOWKV_CUDA_ADDON, commit $(cat "$G/commit" 2>/dev/null || echo unknown)"
node node_modules/tsx/dist/cli.mjs bench/eval/main.ts --model models/skv-small --backend cuda --out "$out/eval" "$@" 2>&1 |
  tee "$out/eval.log"
