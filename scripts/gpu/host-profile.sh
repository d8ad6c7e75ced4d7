#!/usr/bin/env bash
# Where the host time of a host-array decode() goes on the CUDA backend (the wall / GPU ratio of
# the js-overhead target): bench/gpu/profile.ts under node --cpu-prof, then the self time of every
# function in the samples whose stack passes through a cache's decode(), top first.
# On the GPU machine, after `bash scripts/gpu/pack.sh` (carry: [".gpu"]):
#   bash scripts/gpu/host-profile.sh [--batch 4] [--steps 400]
# Writes $OUT/host-<batch>.cpuprofile (or /tmp) and prints the table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
usage="bash scripts/gpu/host-profile.sh [--batch 4] [--steps 400]"
. scripts/args.sh
batch=4 steps=400
while [ $# -gt 0 ]; do
  case "$1" in
    --batch) need_count "$@"; batch=$2; shift 2 ;;
    --steps) need_count "$@"; steps=$2; shift 2 ;;
    *) unknown_arg "$1" ;;
  esac
done
export SHADOWKV_CUDA_SYNC=0
. scripts/gpu/env.sh
need_tsx host-profile
dir="${OUT:-/tmp}"
# NOTE: --import tsx, not tsx's cli (which runs the script in a child process that --cpu-prof does not reach).
node --cpu-prof --cpu-prof-dir="$dir/cpuprof" --import tsx bench/gpu/profile.ts --context 131072 \
  --batches "$batch" --steps "$steps" | grep -E 'K x'
prof=$(ls -S "$dir"/cpuprof/*.cpuprofile | head -1)
mv "$prof" "$dir/host-$batch.cpuprofile" && rm -rf "$dir/cpuprof"
python3 - "$dir/host-$batch.cpuprofile" <<'PY'
import json, sys, collections
p = json.load(open(sys.argv[1]))
nodes = {n['id']: n for n in p['nodes']}
parent = {c: n['id'] for n in p['nodes'] for c in n.get('children', [])}
def name(n):
    f = n['callFrame']
    return f"{f['functionName'] or '(anon)'} {f['url'].split('/')[-1]}:{f['lineNumber'] + 1}"
def under_decode(i):
    while i in nodes:
        if nodes[i]['callFrame']['functionName'] == 'decode': return True
        i = parent.get(i)
    return False
self_us, total = collections.Counter(), 0
for i, dt in zip(p['samples'], p['timeDeltas']):
    if under_decode(i):
        self_us[name(nodes[i])] += dt
        total += dt
print(f'{total / 1000:.1f} ms of samples under decode(); self time, top 25:')
for k, v in self_us.most_common(25):
    print(f'{v / 1000:8.2f} ms {100 * v / max(total, 1):5.1f} %  {k}')
PY
