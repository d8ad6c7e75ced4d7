#!/usr/bin/env bash
# GPU time of each kernel of the fused decode step (isolated, as Nsight Compute replays it), over a
# few steady-state steps of bench/gpu/profile.ts: the per-kernel breakdown behind profile.ts's stages.
# On the GPU machine, after `bash scripts/gpu/pack.sh --slim` (carry: [".gpu"]):
#   bash scripts/gpu/kernels.sh [--context 131072] [--batch 4] [--steps 6] [--variant plain|fp8|hot2048|fp8+hot2048]
# Prints one line per kernel name: launches, mean and total microseconds; the raw CSV goes to
# $OUT/kernels-<context>x<batch>.csv when $OUT is set.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
usage="bash scripts/gpu/kernels.sh [--context 131072] [--batch 4] [--steps 6] [--variant plain|fp8|hot2048|fp8+hot2048]"
. scripts/args.sh
context=131072 batch=4 steps=6 variant=plain
while [ $# -gt 0 ]; do
  case "$1" in
    --context) need_count "$@"; context=$2; shift 2 ;;
    --batch) need_count "$@"; batch=$2; shift 2 ;;
    --steps) need_count "$@"; steps=$2; shift 2 ;;
    --variant) need_value "$@"; variant=$2; shift 2 ;;
    *) unknown_arg "$1" ;;
  esac
done
export SHADOWKV_CUDA_SYNC=0
. scripts/gpu/env.sh
need_tsx kernels
csv="${OUT:-/tmp}/kernels-${context}x${batch}-${variant}.csv"
# profile.ts warms with 10 steps; skipping 160 launches lands in its read-back loop (7 launches a
# step on the one-block select path: append, logits, sums, scores, select, fetch, attention; 5 where
# StepScoreSelect takes sums, scores and select, so the count then spans a few more steps; the
# means are per launch either way; compaction kernels are rare).
ncu --clock-control none --csv --metrics gpu__time_duration.sum \
  -k 'regex:^(Step|FlashDecode|TileDecode|Compact)' --launch-skip 160 --launch-count $((steps * 7)) \
  node node_modules/tsx/dist/cli.mjs bench/gpu/profile.ts --context "$context" --batches "$batch" --variants "$variant" --steps 30 >"$csv.raw" 2>&1 || {
  tail -30 "$csv.raw"; exit 1; }
grep -E '^"' "$csv.raw" >"$csv" || { tail -30 "$csv.raw"; exit 1; }
python3 - "$csv" "$steps" <<'EOF'
import csv, sys, re, collections
t = collections.OrderedDict()
for r in csv.DictReader(open(sys.argv[1])):
    if r.get('Metric Name') != 'gpu__time_duration.sum': continue
    name = re.split(r'[(<]', re.sub(r'<unnamed>::|\(anonymous namespace\)::|^void ', '', r['Kernel Name']))[0]
    v = float(r['Metric Value'].replace(',', ''))
    t.setdefault(f"{name} {r['Grid Size']}", []).append(v / 1000 if r['Metric Unit'] == 'ns' else v * 1000)
tot = 0
for k, v in t.items():
    tot += sum(v)
    print(f'{k:44s} {len(v):3d} launches  mean {sum(v)/len(v):8.1f} us')
print(f'all kernels: {tot / int(sys.argv[2]):.1f} us per step')
EOF
