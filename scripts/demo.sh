#!/usr/bin/env bash
# README command 1: set up, then run the demo (the bundled model through full and shadowkv on the wasm default).
# Extra arguments go to the demo, e.g. `bash scripts/demo.sh --tokens 16384 --task passkey`
# (`bash scripts/demo.sh --help` lists them). They are checked first, flags and the model's
# positions (the demo's --check), which needs only the npm dependencies: a bad one is refused before
# emscripten is installed or the wasm runtime built.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --npm
for a in "$@"; do [ "$a" != --help ] || exec npx tsx examples/demo.ts --help; done
npx tsx examples/demo.ts --check "$@"
bash scripts/setup.sh
npx tsx examples/demo.ts "$@"
