#!/usr/bin/env bash
# Side-by-side timing of addons on the GPU machine: bench/gpu/profile.ts (or, with --run, the
# benchmark's bench/gpu/run.ts) with each addon in turn, alternated over rounds, so that two builds
# (a branch against main) are compared in one run on one card. The packed addon is `packed`; others
# come from `bash scripts/gpu/pack.sh --also NAME=PATH`. An entry NAME@VAR=VALUE[@VAR=VALUE...] runs
# that addon with those variables set, e.g. packed@SHADOWKV_CUDA_SELECT_BLOCKS=8 for the same build's
# other plan. Each run's queued step, stages and pipeline lines (with --run, its decode lines) go to
# stdout and $OUT/ab.log (./ab.log without $OUT), under a header naming the entry and round.
#   bash scripts/gpu/ab.sh [--rounds 2] [--addons packed,NAME...] [--run] -- <the tool's arguments>
# e.g. bash scripts/gpu/ab.sh --addons packed,main -- --context 131072 --batches 1,4 --steps 60
#      bash scripts/gpu/ab.sh --run --addons packed,main -- --contexts 131072 --batches 1,4 --modes decode
# NOTE: --run times as the grid does but without SDPA (speedups read n/a); v39 needed both tools: the
# profile's queued step for 1-5 us changes, the benchmark's own measure before a change is kept.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
usage="bash scripts/gpu/ab.sh [--rounds 2] [--addons packed,NAME...] [--run] -- <the tool's arguments>"
. scripts/args.sh
rounds=2 addons="" tool=bench/gpu/profile.ts lines="step .* queued|stages \(us\), queued|queued, pipeline"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) need_count "$@"; rounds=$2; shift 2 ;;
    --addons) need_value "$@"; addons=$2; shift 2 ;;
    --run) tool=bench/gpu/run.ts lines="  decode( \(device-tensors\))?: "; shift ;;
    --) shift; break ;;
    *) unknown_arg "$1" ;;
  esac
done
export SHADOWKV_CUDA_SYNC=0
. scripts/gpu/env.sh
need_tsx ab
if [ -z "$addons" ]; then
  addons=packed
  for f in /tmp/skv-node/addon-*.node; do [ -f "$f" ] && addons="$addons,$(basename "$f" .node | sed 's/^addon-//')"; done
fi
log="${OUT:-.}/ab.log" run=$(mktemp) work=$(mktemp -d)
mkdir -p "$(dirname "$log")"
IFS=, read -r -a entries <<< "$addons"
for ((round = 1; round <= rounds; round++)); do
  for entry in "${entries[@]}"; do
    IFS=@ read -r -a parts <<< "$entry"
    name=${parts[0]} vars=("${parts[@]:1}")
    for v in ${vars[@]+"${vars[@]}"}; do
      [[ "$v" =~ ^[A-Z_][A-Z0-9_]*=.*$ ]] || { echo "ab: '$v' in '$entry' is not VAR=VALUE" >&2; exit 2; }
    done
    path=/tmp/skv-node/shadowkv_cuda.node
    [ "$name" = packed ] || path=/tmp/skv-node/addon-$name.node
    [ -f "$path" ] || { echo "ab: no addon $name ($path); pack it with pack.sh --also $name=PATH" >&2; exit 2; }
    echo "== $entry, round $round" | tee -a "$log"
    args=("$@")
    [ "$tool" = bench/gpu/profile.ts ] || args+=(--out "$work")  # run.ts's JSON and plot stay out of $OUT
    env ${vars[@]+"${vars[@]}"} SHADOWKV_CUDA_ADDON="$path" node node_modules/tsx/dist/cli.mjs "$tool" "${args[@]}" > "$run" 2>&1 ||
      echo "ab: $entry failed (see $log)" >> "$run"
    cat "$run" >> "$log"
    grep -aE "$lines|ab: " "$run" || true
  done
done
