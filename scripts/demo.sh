#!/usr/bin/env bash
# README command 1: set up, then run the demo (the bundled model through full and shadowkv on the wasm default).
# Extra arguments go to the demo, e.g. `bash scripts/demo.sh --tokens 16384 --task passkey`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
npx tsx examples/demo.ts "$@"
