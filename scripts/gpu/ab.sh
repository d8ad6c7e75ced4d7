#!/usr/bin/env bash
# Side-by-side timing of addons on the GPU machine: bench/gpu/profile.ts with each addon in turn,
# alternated over rounds, so that two builds (a branch against main) are compared in one run on one
# card. The packed addon is `packed`; others come from `bash scripts/gpu/pack.sh --also NAME=PATH`.
# Each run's queued step, stages and pipeline lines go to stdout and $OUT/ab.log (./ab.log without
# $OUT), under a header naming the addon and round.
#   bash scripts/gpu/ab.sh [--rounds 2] [--addons packed,NAME...] -- <profile.ts arguments>
# e.g. bash scripts/gpu/ab.sh --addons packed,main -- --context 131072 --batches 1,4 --steps 60
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rounds=2 addons=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --addons) addons=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "ab: unknown argument $1 (known: --rounds, --addons, then -- and profile.ts's)" >&2; exit 2 ;;
  esac
done
export SHADOWKV_CUDA_SYNC=0
. scripts/gpu/env.sh
need_tsx ab
if [ -z "$addons" ]; then
  addons=packed
  for f in /tmp/skv-node/addon-*.node; do [ -f "$f" ] && addons="$addons,$(basename "$f" .node | sed 's/^addon-//')"; done
fi
log="${OUT:-.}/ab.log" run=$(mktemp)
mkdir -p "$(dirname "$log")"
IFS=, read -r -a names <<< "$addons"
for ((round = 1; round <= rounds; round++)); do
  for name in "${names[@]}"; do
    path=/tmp/skv-node/shadowkv_cuda.node
    [ "$name" = packed ] || path=/tmp/skv-node/addon-$name.node
    [ -f "$path" ] || { echo "ab: no addon $name ($path); pack it with pack.sh --also $name=PATH" >&2; exit 2; }
    echo "== $name, round $round" | tee -a "$log"
    SHADOWKV_CUDA_ADDON=$path node node_modules/tsx/dist/cli.mjs bench/gpu/profile.ts "$@" > "$run" 2>&1 || echo "ab: $name failed (see $log)" | tee -a "$run"
    cat "$run" >> "$log"
    grep -aE "step .* queued|stages \(us\), queued|queued, pipeline" "$run" || true
  done
done
