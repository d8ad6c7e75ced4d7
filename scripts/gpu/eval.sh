#!/usr/bin/env bash
# The accuracy evaluation (`npm run eval`, issue 8) on the GPU machine: caches and the model's
# projections on CUDA (--backend cuda), so 32K prompts take seconds instead of the CPU's minutes.
# Expects `bash scripts/gpu/pack.sh --slim` (carry: [".gpu"]): with the full pack the 27 MB model
# does not fit the 64 MiB a call carries. Writes $OUT/eval.json, .md, .svg, .partial.jsonl and eval.log.
# Arguments go to bench/eval/main.ts after the defaults below (a later --lengths or --samples wins).
# A grid longer than one call runs in pieces: --minutes M starts no prompt after M minutes, and a
# bench/results/eval.partial.jsonl in the tree (the last call's, copied back) is resumed from.
# Usage: [SKV_PROFILE=1] bash scripts/gpu/eval.sh [--model models/skv-small] [--minutes 8] [main.ts args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export SHADOWKV_CUDA_SYNC="${SHADOWKV_CUDA_SYNC:-0}"  # no sync per op: the evaluation times nothing, but waits would slow it
. scripts/gpu/env.sh
need_tsx eval
out="${OUT:-bench/results}"
mkdir -p "$out"
nvidia-smi -L || true
echo "node $(node --version), addon $SHADOWKV_CUDA_ADDON, commit $(cat "$G/commit" 2>/dev/null || echo unknown)"
resume=()
[ -f bench/results/eval.partial.jsonl ] && resume=(--resume bench/results/eval.partial.jsonl)
# SKV_PROFILE=1: a V8 CPU profile of the run in $out/prof (node's --cpu-prof is refused in NODE_OPTIONS,
# and tsx's cli runs the script in a child, so the loader is imported into this node directly).
prof=()
[ "${SKV_PROFILE:-0}" = 1 ] && prof=(--cpu-prof --cpu-prof-dir "$out/prof")
node "${prof[@]}" --import tsx bench/eval/main.ts --model models/skv-small --backend cuda --out "$out/eval" "${resume[@]}" "$@" 2>&1 |
  tee "$out/eval.log"
