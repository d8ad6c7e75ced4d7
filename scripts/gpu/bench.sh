#!/usr/bin/env bash
# The GPU BENCHMARK (issue 7, `npm run bench:gpu`): ShadowKV's decode step, prefill compression and
# largest batch on one Llama-3-8B layer against dense PyTorch SDPA, in one GPU run:
#   1. bench/gpu/run.ts --plan   the contexts, batches and largest whole-model batches for this card
#   2. bench/gpu/sdpa.py         dense PyTorch timings of that plan (SDPA decode and causal prefill,
#                                pinned copy bandwidth, Gram + eigh), $OUT/sdpa.json
#   3. bench/gpu/run.ts --sdpa   ShadowKV and the own full policy on the cuda backend, merged with
#                                step 2: $OUT/gpu-<card>.json and $OUT/gpu-<card>.svg, targets printed
# On the GPU machine (no Node.js) it expects what `bash scripts/gpu/pack.sh` put in .gpu/ (carry:
# [".gpu"]), including .gpu/tsx.tar.xz; on a machine with Node and a local addon build it uses those.
# Arguments go to bench/gpu/run.ts (both runs), e.g. --contexts 131072 --batches 4 --modes decode;
# SDPA_ARGS goes to sdpa.py (e.g. SDPA_ARGS=--no-eigh). $OUT gets three files: gpu-<card>.json, .svg
# and gpu.log (the device tool brings back at most eight from $OUT: a run that left its plan and
# SDPA files there too lost its JSON beside a caller's logs); the plan, sdpa.json and their logs stay
# in /tmp/skv-bench-gpu/ (sdpa.json's figures are in gpu-<card>.json). Without $OUT run.ts chooses:
# bench/results/ for the documented grid (no arguments), the temp dir for any other (a trial).
# Usage: bash scripts/gpu/bench.sh [run.ts args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# Timings need the ops asynchronous: env.sh's default (a sync after every op, for naming faults) would
# add one per op. NOTE: set even where the caller's environment says 1 (a shell that sourced env.sh
# timed own full at 0.69x of SDPA instead of 0.89x, bench/NOTES.md v22).
[ "${SHADOWKV_CUDA_SYNC:-0}" = 0 ] || echo "bench: SHADOWKV_CUDA_SYNC=$SHADOWKV_CUDA_SYNC in the environment; timing with 0 (every op would wait)" >&2
export SHADOWKV_CUDA_SYNC=0
if [ -f .gpu/node.xz ]; then
  . scripts/gpu/env.sh
  need_tsx bench
  [ -n "${BENCH_COMMIT:-}" ] || [ ! -f "$G/commit" ] || export BENCH_COMMIT="$(cat "$G/commit")"
else
  echo "bench: no .gpu/ here: using this machine's node and the addon shadowkv-cuda finds (scripts/build-cuda.sh)"
fi
out="${OUT:-}"
work=/tmp/skv-bench-gpu
mkdir -p ${out:+"$out"} "$work"
export BENCH_COMMAND="bash scripts/gpu/bench.sh${*:+ $*}"
if command -v nvidia-smi >/dev/null; then nvidia-smi -L || true; else echo "bench: no nvidia-smi on this machine"; fi
echo "node $(node --version), addon ${SHADOWKV_CUDA_ADDON:-(found by shadowkv-cuda)}, SHADOWKV_CUDA_SYNC=$SHADOWKV_CUDA_SYNC, commit ${BENCH_COMMIT:-unknown}"
tsx=(node node_modules/tsx/dist/cli.mjs)

SECONDS=0
"${tsx[@]}" bench/gpu/run.ts --plan "$work/plan.json" "$@" 2>&1 | tee "$work/plan.log"
echo "bench: plan took ${SECONDS} s"

SECONDS=0
# A failure here (no torch, a crash) leaves the node half without baselines, not without results.
# shellcheck disable=SC2086
python3 bench/gpu/sdpa.py "$work/plan.json" "$work/sdpa.json" ${SDPA_ARGS:-} 2>&1 | tee "$work/sdpa.log" || echo "bench: sdpa.py failed (see $work/sdpa.log); continuing without PyTorch baselines"
echo "bench: sdpa.py took ${SECONDS} s"

SECONDS=0
log="${out:+$out/gpu.log}"
# The card's clocks beside the timed cases (bench/gpu/clocks.py), sampled by nvidia-smi on its own.
sampler=""
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader,nounits -lms 500 >"$work/clocks.csv" 2>/dev/null &
  sampler=$!
fi
start=$(date +%s.%N)
"${tsx[@]}" bench/gpu/run.ts --sdpa "$work/sdpa.json" ${out:+--out "$out"} "$@" 2>&1 | tee "${log:-$work/gpu.log}"
echo "bench: run.ts took ${SECONDS} s; results where its last lines say"
if [ -n "$sampler" ]; then
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  python3 bench/gpu/clocks.py "$work/clocks.csv" "$start" 2>&1 | tee -a "${log:-$work/gpu.log}" || true
fi
