#!/usr/bin/env bash
# The first GPU call of a session (bench/NOTES.md, "Next"): everything that checks the committed CUDA
# code, in one call under the command limit, each part in its own time box, logs and JSON under $OUT:
#   1. the CUDA suites (run-tests.sh -t cuda)                         $OUT/tests.log, vitest.json
#   2. wasm vs cuda parity (parity.sh)                                $OUT/parity.json, parity.log
#   3. the step profile at 128K x 1 and 4 (bench/gpu/profile.ts)      $OUT/profile.json, profile.log
#   4. the kernel benches, where bench/gpu/kernels/build.sh built them and carry brought them
# Expects what `bash scripts/gpu/pack.sh` put in .gpu/ (carry: [".gpu"], plus "bench/gpu/kernels/build"
# for part 4). Prints a one-line summary per part; exits non-zero if the suites or parity failed.
# Usage: bash scripts/gpu/check.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
usage="bash scripts/gpu/check.sh"
. scripts/args.sh
no_args "$@"
export OUT="${OUT:-/tmp/skv-check}"
out="$OUT"
mkdir -p "$out"
status=0
part() {  # part <name> <seconds> <command...>: runs it with its output in $out/<name>.log, says how it ended
  local name=$1 secs=$2
  shift 2
  SECONDS=0
  timeout "$secs" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "check: $name rc $rc in ${SECONDS} s"
  return $rc
}
part tests 240 bash scripts/gpu/run-tests.sh -t cuda || status=1
grep -E "Tests .*(passed|failed)" "$out/tests.log" | tail -1
part parity 200 bash scripts/gpu/parity.sh || status=1
tail -4 "$out/parity.log"
(. scripts/gpu/env.sh && need_tsx check && export SHADOWKV_CUDA_SYNC=0 && part profile 90 node node_modules/tsx/dist/cli.mjs \
  bench/gpu/profile.ts --context 131072 --batches 1,4 --out "$out/profile.json")
grep -E "queued|stages" "$out/profile.log"
for b in host_pages_bench logits_bench miss_bench select_bench; do
  [ -x "bench/gpu/kernels/build/$b" ] && part "$b" 60 "bench/gpu/kernels/build/$b" && cat "$out/$b.log"
done
exit $status
