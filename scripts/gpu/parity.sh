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
G=.gpu
unxz_to() {  # unxz_to <file.xz> <out>: xz where it exists, else Python's lzma
  if command -v xz >/dev/null; then xz -dc "$1" > "$2"
  else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; fi
}
mkdir -p /tmp/skv-node
unxz_to "$G/node.xz" /tmp/skv-node/node
chmod +x /tmp/skv-node/node
export PATH="/tmp/skv-node:$PATH"
if [ ! -d node_modules/vitest ]; then
  unxz_to "$G/node_modules.tar.xz" /tmp/skv-node/node_modules.tar
  tar -xf /tmp/skv-node/node_modules.tar
fi
if [ ! -f node_modules/tsx/dist/cli.mjs ]; then
  [ -f "$G/tsx.tar.xz" ] || { echo "parity: $G/tsx.tar.xz is missing; run \`bash scripts/gpu/pack.sh --no-build\` where Node is" >&2; exit 1; }
  unxz_to "$G/tsx.tar.xz" /tmp/skv-node/tsx.tar
  tar -xf /tmp/skv-node/tsx.tar
fi
mkdir -p runtime/wasm/out && cp -n "$G"/wasm/*.wasm runtime/wasm/out/
export SHADOWKV_CUDA_ADDON="$PWD/$G/shadowkv_cuda.node"
export SHADOWKV_CUDA_SYNC="${SHADOWKV_CUDA_SYNC:-1}"  # a fault names its op
[ -n "${PARITY_COMMIT:-}" ] || [ ! -f "$G/commit" ] || export PARITY_COMMIT="$(cat "$G/commit")"
out="${OUT:-.}"
nvidia-smi -L || true
echo "node $(node --version), addon $SHADOWKV_CUDA_ADDON, commit ${PARITY_COMMIT:-unknown}"
node node_modules/tsx/dist/cli.mjs bench/parity.ts "$out/parity.json" "$@" 2>&1 | tee "$out/parity.log"
