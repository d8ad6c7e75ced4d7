#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine and builds the wasm runtime:
# the npm dependencies (npm ci), emscripten (apt), runtime/wasm/out/*.wasm. Safe to re-run: what is
# up to date is skipped.
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

# NOTE: npm ci through a linked node_modules empties the link's target, which other trees share.
if [ -L node_modules ]; then
  echo "setup: node_modules links to $(readlink node_modules): not reinstalled here (npm ci would empty what it links to)"
elif [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
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
# The wasm runtime is rebuilt only when a file it is built from (runtime/wasm's sources and headers,
# build.sh, the kernels/ headers it includes) is newer than the older of its two outputs: a re-run
# then costs no emcc minute. Prints why it builds, or nothing when it is up to date.
wasm_stale() {
  local out=(runtime/wasm/out/shadowkv-simd.wasm runtime/wasm/out/shadowkv.wasm) oldest="" f newer
  for f in "${out[@]}"; do
    [ -f "$f" ] || { echo "$f is missing"; return; }
    [ -n "$oldest" ] && [ "$f" -nt "$oldest" ] || oldest="$f"
  done
  newer="$(find runtime/wasm/*.cc runtime/wasm/*.h runtime/wasm/build.sh kernels/*.h -newer "$oldest" -print -quit)"
  [ -z "$newer" ] || echo "$newer changed"
}
stale="$(wasm_stale)"
[ -z "$stale" ] || apt_install emscripten emcc
[ "$browser" = 0 ] || apt_install chromium chromium

if [ -z "$stale" ]; then
  echo "setup: the wasm runtime is up to date (runtime/wasm/out is newer than every source it is built from); not rebuilt"
else
  echo "setup: building the wasm runtime from source ($stale)"
  bash runtime/wasm/build.sh
fi
