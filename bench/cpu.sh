#!/usr/bin/env bash
# The CPU benchmark (npm run bench:cpu): builds what is missing, then runs bench/cpu.ts, which
# writes bench/results/cpu.json. Takes ~1.5 minutes on 2 cores, most of it the 128K-token stage.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
usage="bash bench/cpu.sh   (or npm run bench:cpu; BENCH_COMPARE=<checkout>[:label] also times another build)"
. scripts/args.sh
no_args "$@"
# The SIMD variant is the one the benchmark loads; --dev builds only it. Rebuilt when missing or
# older than a runtime source, so wasm and native always time the same code.
WASM=runtime/wasm/out/shadowkv-simd.wasm
if [[ ! -f $WASM ]] || [[ -n "$(find runtime/wasm -maxdepth 1 \( -name '*.cc' -o -name '*.h' \) -newer $WASM)" ]]; then
  bash runtime/wasm/build.sh --dev
fi
# Always rebuilt (seconds): the native side must come from the same sources as the wasm it is compared with.
bash bench/native/build.sh
# Recorded in cpu.json as the command that produced it.
if [[ "${npm_lifecycle_event:-}" == "bench:cpu" ]]; then CMD="npm run bench:cpu"; else CMD="bash bench/cpu.sh"; fi
BENCH_COMMAND="$CMD" npx tsx bench/cpu.ts
