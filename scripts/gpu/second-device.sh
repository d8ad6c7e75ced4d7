#!/usr/bin/env bash
# The CUDA suites on the last GPU of a machine with two or more: run-tests.sh with
# SHADOWKV_CUDA_DEVICE=n (every backend of the run takes that ordinal, none passes `device`), while
# nvidia-smi samples each GPU's used memory every 0.5 s. Fails where the suites fail, or where the
# memory of any other GPU rose by more than 64 MiB (a context, stream or buffer that some path made
# on the default device instead of the chosen one; a CUDA context alone is ~500 MiB).
# CUDA_DEVICE_ORDER=PCI_BUS_ID numbers the GPUs as nvidia-smi does.
# Usage: bash scripts/gpu/second-device.sh [run-tests.sh args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
n=$(nvidia-smi -L | grep -c '^GPU ' || true)
[ "$n" -ge 2 ] || { echo "second-device: needs two GPUs, nvidia-smi lists $n" >&2; exit 2; }
dev=$((n - 1))
samples=$(mktemp)
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 500 > "$samples" &
smi=$!
trap 'kill $smi 2>/dev/null || true; rm -f "$samples"' EXIT
sleep 1
echo "second-device: the suites on GPU $dev of $n (SHADOWKV_CUDA_DEVICE=$dev)"
rc=0
CUDA_DEVICE_ORDER=PCI_BUS_ID SHADOWKV_CUDA_DEVICE=$dev bash scripts/gpu/run-tests.sh "$@" || rc=$?
kill $smi 2>/dev/null || true
wait $smi 2>/dev/null || true
# Each GPU's used memory at the first sample and at most, in MiB.
awk -F', *' -v dev="$dev" '
  { if (!($1 in first)) first[$1] = $2; if (!($1 in top) || $2 + 0 > top[$1]) top[$1] = $2 + 0 }
  END {
    bad = 0
    for (i in first) {
      printf "second-device: GPU %s used %s MiB at the start, %s MiB at most%s\n", i, first[i], top[i], i == dev ? " (the suites ran here)" : ""
      if (i != dev && top[i] > first[i] + 64) bad = 1
    }
    exit bad
  }' "$samples" || { echo "second-device: memory rose on a GPU other than $dev" >&2; rc=1; }
exit $rc
