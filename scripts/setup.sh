#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine and builds the wasm runtime:
# the npm dependencies (npm ci), emscripten (apt), runtime/wasm/out/*.wasm. Safe to re-run.
# --browser also installs chromium (apt), which the browser test needs.
# --npm installs only the npm dependencies (scripts/demo.sh checks the demo's flags with them, before the rest).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
usage="bash scripts/setup.sh [--browser] [--npm]"
. scripts/args.sh
browser=0 npm_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --browser) browser=1 ;;
    --npm) npm_only=1 ;;
    *) unknown_arg "$1" ;;
  esac
  shift
done

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies"
  npm ci --no-audit --no-fund
fi
[ "$npm_only" = 0 ] || exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_updated=""
apt_install() {  # apt_install <package> <command it provides>
  command -v "$2" >/dev/null 2>&1 && return
  echo "setup: installing $1 (apt, ~1 minute)"
  [ -n "$apt_updated" ] || { $SUDO apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$1" >/dev/null
}
apt_install emscripten emcc
[ "$browser" = 0 ] || apt_install chromium chromium

echo "setup: building the wasm runtime from source"
bash runtime/wasm/build.sh
