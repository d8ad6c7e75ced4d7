# Sourced by the GPU-machine scripts (run-tests.sh, parity.sh): unpacks what `bash scripts/gpu/pack.sh`
# put in .gpu/ (Node, node_modules, the addon, the wasm runtime) and sets the environment the SDK
# reads there. Runs from the repository root.
G=.gpu
unxz_to() {  # unxz_to <file.xz> <out>: xz where it exists, else Python's lzma
  # Written beside <out> and renamed over it: a binary still running from an earlier source of this
  # file (node, the addon) cannot be opened for writing (ETXTBSY), but it can be replaced.
  if command -v xz >/dev/null; then xz -dc "$1" > "$2.part"
  else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2.part"; fi
  mv -f "$2.part" "$2"
}
need_tsx() {  # need_tsx <script name>: unpacks node_modules/tsx from .gpu/tsx.tar.xz (node_modules.tar.xz leaves it out)
  [ -f node_modules/tsx/dist/cli.mjs ] && return
  [ -f "$G/tsx.tar.xz" ] || { echo "$1: $G/tsx.tar.xz is missing; run \`bash scripts/gpu/pack.sh --no-build\` where Node is" >&2; exit 1; }
  unxz_to "$G/tsx.tar.xz" /tmp/skv-node/tsx.tar
  tar -xf /tmp/skv-node/tsx.tar
}
mkdir -p /tmp/skv-node
unxz_to "$G/node.xz" /tmp/skv-node/node
chmod +x /tmp/skv-node/node
export PATH="/tmp/skv-node:$PATH"
if [ -f "$G/scripts.tar.xz" ]; then  # pack.sh --slim: tsx and msgpackr only
  [ -f node_modules/tsx/dist/cli.mjs ] || { unxz_to "$G/scripts.tar.xz" /tmp/skv-node/scripts.tar; tar -xf /tmp/skv-node/scripts.tar; }
elif [ ! -d node_modules/vitest ]; then
  unxz_to "$G/node_modules.tar.xz" /tmp/skv-node/node_modules.tar
  tar -xf /tmp/skv-node/node_modules.tar
fi
unxz_to "$G/shadowkv_cuda.node.xz" /tmp/skv-node/shadowkv_cuda.node  # the addon of this pack, even where an older one was unpacked
export SHADOWKV_CUDA_ADDON=/tmp/skv-node/shadowkv_cuda.node
for f in "$G"/addon-*.node.xz; do  # pack.sh --also: other addons, for scripts/gpu/ab.sh
  [ -f "$f" ] && unxz_to "$f" "/tmp/skv-node/$(basename "$f" .xz)"
done
# SKV_ADDON=NAME runs the scripts (run-tests.sh, parity.sh) on the addon packed with --also NAME=...
# instead, so that a branch's build is tested beside main's timing in one pack.
if [ -n "${SKV_ADDON:-}" ]; then
  [ -f "/tmp/skv-node/addon-$SKV_ADDON.node" ] || { echo "env.sh: no addon $SKV_ADDON (pack it with pack.sh --also $SKV_ADDON=PATH)" >&2; exit 2; }
  export SHADOWKV_CUDA_ADDON="/tmp/skv-node/addon-$SKV_ADDON.node"
fi
mkdir -p runtime/wasm/out && cp -n "$G"/wasm/*.wasm runtime/wasm/out/ 2>/dev/null
export SHADOWKV_CUDA_SYNC="${SHADOWKV_CUDA_SYNC:-1}"  # every op waits for its kernels, so a fault names its op
