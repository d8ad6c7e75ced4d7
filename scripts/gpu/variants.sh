#!/usr/bin/env bash
# The kernel benches' variant modes behind bench/NOTES.md v44, in one call (~2 min on an H200):
#   miss_bench variants               every way of reading the value misses over PCIe  $OUT/miss-variants.log
#   logits_bench MODE cold            the landmark logits' loop rewritten (interleave, tma, qfirst), bit
#                                     for bit against main's, and its per-block trace, from DRAM  $OUT/logits-MODE.log
#   ncu on logits_bench at 1 and 4 rows                                                      $OUT/logits-ncu.log
# Build the benches here (bash bench/gpu/kernels/build.sh) and carry bench/gpu/kernels/build, or put
# miss_bench and logits_bench in .gpu/. Exits non-zero if a bench found a wrong byte or bit.
# Usage: bash scripts/gpu/variants.sh [--no-ncu]
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
usage="bash scripts/gpu/variants.sh [--no-ncu]"
. scripts/args.sh
case "$*" in
  ""|--no-ncu) ;;
  *) usage_error "unknown arguments '$*'" ;;
esac
out="${OUT:-/tmp/skv-variants}"
mkdir -p "$out"
bin() {
  for d in bench/gpu/kernels/build .gpu; do [ -x "$d/$1" ] && { echo "$d/$1"; return 0; }; done
  echo "variants: no $1 here (bash bench/gpu/kernels/build.sh, then carry bench/gpu/kernels/build)" >&2
  return 1
}
miss=$(bin miss_bench) && logits=$(bin logits_bench) || exit 2
status=0
timeout 120 "$miss" variants > "$out/miss-variants.log" 2>&1 || status=1
tail -1 "$out/miss-variants.log"
for m in interleave tma qfirst trace; do
  timeout 60 "$logits" "$m" cold > "$out/logits-$m.log" 2>&1 || status=1
  echo "logits_bench $m cold: $(tail -1 "$out/logits-$m.log")"
done
if [ "${1:-}" != --no-ncu ]; then
  ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
  if [ -z "$ncu" ]; then
    echo "variants: no ncu here"
  else
    for skip in 0 255; do  # the first launch of 8 tasks (1 row) and of 32 (4 rows), one range a block
      echo "## --launch-skip $skip"
      timeout 120 "$ncu" --kernel-name Fast --launch-skip $skip --launch-count 1 --section SpeedOfLight --section Occupancy \
        --section SchedulerStats --section WarpStateStats --section MemoryWorkloadAnalysis --section LaunchStats "$logits"
    done > "$out/logits-ncu.log" 2>&1
    grep -E "Elapsed Cycles|DRAM Throughput|Eligible Warps" "$out/logits-ncu.log"
  fi
fi
exit $status
