#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine and builds the wasm runtime:
# emscripten (apt), the npm dependencies (npm ci), runtime/wasm/out/*.wasm. Safe to re-run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v emcc >/dev/null 2>&1; then
  echo "setup: installing emscripten (apt, ~1 minute)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq emscripten >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies"
  npm ci --no-audit --no-fund
fi

echo "setup: building the wasm runtime from source"
bash runtime/wasm/build.sh
