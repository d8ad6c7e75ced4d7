#!/usr/bin/env bash
# Runs the SDK in headless Chromium: bundles examples/browser/main.ts for the browser, serves it
# with the wasm runtime on 127.0.0.1, and prints what the page computed. Needs `chromium` (apt).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v chromium >/dev/null || { echo "browser-check: install chromium first (apt-get install -y chromium)"; exit 2; }
[ -f runtime/wasm/out/shadowkv-simd.wasm ] || bash runtime/wasm/build.sh --dev
out="$(mktemp -d)"
mkdir -p "$out/wasm"
# node:* stays external: the SDK imports node:fs only when it runs under Node.
npx esbuild examples/browser/main.ts --bundle --format=esm --platform=browser --target=es2022 \
  --external:'node:*' --outfile="$out/main.js" --log-level=warning
cp examples/browser/index.html "$out/"
cp runtime/wasm/out/*.wasm "$out/wasm/"
port=$((20000 + RANDOM % 20000))
node -e '
  const http = require("http"), fs = require("fs"), path = require("path");
  const types = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm" };
  const root = process.argv[1];
  const server = http.createServer((req, res) => {
    const file = path.join(root, decodeURIComponent(req.url.split("?")[0]));
    if (!file.startsWith(root) || !fs.existsSync(file)) { res.writeHead(404); return res.end(); }
    res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream" });
    fs.createReadStream(file).pipe(res);
  }).listen(Number(process.argv[2]), "127.0.0.1");
  setTimeout(() => server.close(), 60000).unref();
' "$out" "$port" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$out"' EXIT
# NOTE: wait until the server accepts connections: a fixed 0.5 s sleep lost the race on a loaded
# machine (Chromium then got a refused connection and the page no result).
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
dom="$(timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$(mktemp -d)" --virtual-time-budget=30000 --dump-dom "http://127.0.0.1:$port/index.html" 2>"$out/chromium.log")"
result="$(printf '%s' "$dom" | sed -n 's:.*<pre id="result">\(.*\)</pre>.*:\1:p')"
echo "browser-check: $result"
# On failure, what the page and Chromium said (a flake once failed here in 3 s with nothing to show).
[[ "$result" == ok* ]] || { printf '%s\n' "$dom" | tail -c 2000; tail -20 "$out/chromium.log"; exit 1; }
