#!/usr/bin/env bash
# The PARITY run on the GPU machine (issue 7): bench/parity.ts feeds the same inputs to the wasm and
# cuda backends, op by op and through every conformance scenario, for f32, f16 and bf16 storage.
# Like run-tests.sh it expects what `bash scripts/gpu/pack.sh` put in .gpu/ (carry: [".gpu"]), plus
#   .gpu/tsx.tar.xz   node_modules/tsx with its own esbuild (node_modules.tar.xz leaves tsx out)
#   .gpu/commit       the commit packed, for parity.json (the GPU machine has no git)
# Writes $OUT/parity.json and $OUT/parity.log (./parity.json and ./parity.log without $OUT); exits
# non-zero when cuda cannot start. Arguments go to bench/parity.ts, e.g. --dtypes bf16.
# Usage: bash scripts/gpu/parity.sh [parity args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. scripts/gpu/env.sh
need_tsx parity
[ -n "${PARITY_COMMIT:-}" ] || [ ! -f "$G/commit" ] || export PARITY_COMMIT="$(cat "$G/commit")"
out="${OUT:-.}"
mkdir -p "$out"
nvidia-smi -L || true
echo "node $(node --version), addon $SHADOWKV_CUDA_ADDON, commit ${PARITY_COMMIT:-unknown}"
node node_modules/tsx/dist/cli.mjs bench/parity.ts "$out/parity.json" "$@" 2>&1 | tee "$out/parity.log"
