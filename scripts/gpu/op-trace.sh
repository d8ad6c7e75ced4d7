#!/usr/bin/env bash
# Where a cache stalls on the GPU machine (how v57 found the hang of bench/NOTES.md v56):
# bench/gpu/opTrace.ts for each (q scale, k scale) in its own process under a limit, with
# SHADOWKV_CUDA_SYNC=1, so that each trace's last lines name the op and the addon call that did not
# return. Expects what `bash scripts/gpu/pack.sh` put in .gpu/ (carry: [".gpu"]).
# Writes $OUT/trace-Q-K.txt (./ without $OUT) and prints each one's last lines (addr left out).
# Usage: bash scripts/gpu/op-trace.sh [seconds per case, default 30] [dtype, default f32]
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
usage="bash scripts/gpu/op-trace.sh [seconds per case] [f32 | f16 | bf16]"
. scripts/args.sh
[ $# -le 2 ] || usage_error "takes two arguments at most, got '$*'"
need_positive seconds "${1:-30}"
[[ "${2:-f32}" =~ ^(f32|f16|bf16)$ ]] || usage_error "dtype must be f32, f16 or bf16, got '$2'"
. scripts/gpu/env.sh
need_tsx op-trace
export SHADOWKV_CUDA_SYNC=1
out="${OUT:-.}"
mkdir -p "$out"
# A case still running at its limit: where cuda-gdb exists, it attaches and writes where the kernel's
# warps are (v57 found the hang of v56 so: three warps at a barrier, the fourth diverged).
for c in 1e20,1e20 1e20,1 1,1e20 1e25,1e25; do
  q=${c%,*} k=${c#*,} f="$out/trace-$q-$k.txt"
  node node_modules/tsx/dist/cli.mjs bench/gpu/opTrace.ts "$f" "$q" "$k" cuda "${2:-f32}" > "$f.log" 2>&1 &
  tsx=$!
  for ((s = 0; s < ${1:-30}; s++)); do kill -0 $tsx 2>/dev/null || break; sleep 1; done
  if kill -0 $tsx 2>/dev/null; then
    pid=$(pgrep -n -f "opTrace.ts $f")  # tsx's child, the Node process that holds the GPU
    [ -z "$pid" ] || ! command -v cuda-gdb >/dev/null ||
      timeout 60 cuda-gdb -batch -p "$pid" -ex "info cuda kernels" -ex "info cuda warps" -ex bt > "$f.gdb" 2>&1
    pkill -9 -f "opTrace.ts $f"
    echo "== q $q, k $k: still running after ${1:-30} s$([ -s "$f.gdb" ] && echo " (cuda-gdb: $f.gdb)")"
  else
    wait $tsx
    echo "== q $q, k $k: rc $?"
  fi
  grep -v ' addr$' "$f" | tail -4
done
