#!/usr/bin/env bash
# The stall of bench/NOTES.md v56 on the GPU machine: bench/gpu/opTrace.ts for each (q scale, k scale)
# in its own process under a timeout, with SHADOWKV_CUDA_SYNC=1, so that each trace's last lines name
# the op that did not return. Expects what `bash scripts/gpu/pack.sh` put in .gpu/ (carry: [".gpu"]).
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
for c in 1e20,1e20 1e20,1 1,1e20 1e25,1e25; do
  q=${c%,*} k=${c#*,} f="$out/trace-$q-$k.txt"
  timeout "${1:-30}" node node_modules/tsx/dist/cli.mjs bench/gpu/opTrace.ts "$f" "$q" "$k" cuda "${2:-f32}" > "$f.log" 2>&1
  echo "== q $q, k $k: rc $? (124: timed out)"
  grep -v ' addr$' "$f" | tail -4
done
