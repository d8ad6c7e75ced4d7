#!/usr/bin/env bash
# README command 1: set up, then run the demo (full vs shadowkv on the wasm default).
# Extra arguments go to the demo, e.g. `bash scripts/demo.sh --tokens 65536 --layers 2`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
npx tsx examples/demo.ts "$@"
