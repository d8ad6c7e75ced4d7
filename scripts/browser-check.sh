#!/usr/bin/env bash
# Runs the SDK in headless Chromium: bundles examples/browser/main.ts for the browser, serves it
# with the wasm runtime on 127.0.0.1, and prints what the page computed. Needs `chromium` (apt).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
usage="bash scripts/browser-check.sh"
. scripts/args.sh
no_args "$@"
command -v chromium >/dev/null || { echo "browser-check: install chromium first (apt-get install -y chromium)"; exit 2; }
[ -f runtime/wasm/out/shadowkv-simd.wasm ] || bash runtime/wasm/build.sh --dev
out="$(mktemp -d)"
mkdir -p "$out/wasm"
# No flag for Node built-ins: the SDK imports none (under Node it asks process.getBuiltinModule).
npx esbuild examples/browser/main.ts --bundle --format=esm --platform=browser --target=es2022 \
  --outfile="$out/main.js" --log-level=warning
npx esbuild test/browser/worker.ts --bundle --format=esm --platform=browser --target=es2022 \
  --outfile="$out/worker.js" --log-level=warning
# The example's page, plus a reporter that posts what the page shows once it is done (or an uncaught
# error) back to the server below. NOTE: the page used to be read by `--dump-dom` under
# `--virtual-time-budget`, and in a fresh clone's full test run the dump came back after ~1 s still
# saying "running" (most likely the virtual time ran out while the page awaited work off its main
# thread: the wasm's fetch and compile). Waiting in real time for the page's own report has no such race.
sed 's|</body>|<script type="module">\
const el = document.getElementById("result");\
const report = (text) => fetch("/result", { method: "POST", body: text });\
// test/browser/worker.js in a module worker, then served under a CSP without wasm-unsafe-eval.\
const inWorker = (url) => new Promise((resolve) => {\
  const w = new Worker(url, { type: "module" });\
  w.onmessage = (e) => { if (typeof e.data === "string") { w.terminate(); resolve(e.data); } };\
  w.onerror = (e) => resolve(`error ${e.message}`);\
});\
let started = false;\
const done = async () => {\
  if (el.textContent === "running" \|\| started) return;\
  started = true;\
  const page = el.textContent, worker = await inWorker("worker.js"), csp = await inWorker("worker.js?csp");\
  const cspOk = csp.includes("script-src allows \x27wasm-unsafe-eval\x27; add it");\
  report(page.startsWith("ok") \&\& worker === "ok" \&\& cspOk ? `${page} worker=ok csp=named` : `error page: ${page}; worker: ${worker}; csp: ${csp}`);\
};\
new MutationObserver(done).observe(el, { childList: true, characterData: true, subtree: true });\
addEventListener("error", (e) => report(`error uncaught: ${e.message}`));\
done();\
</script></body>|' examples/browser/index.html > "$out/index.html"
cp runtime/wasm/out/*.wasm "$out/wasm/"
node -e '
  const http = require("http"), fs = require("fs"), path = require("path");
  const types = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm" };
  const root = process.argv[1];
  const server = http.createServer((req, res) => {
    if (req.method === "POST" && req.url === "/result") {  // the report of the page: the first one stands
      let body = "";
      req.on("data", (c) => (body += c)).on("end", () => {
        const file = path.join(root, "result.txt");
        if (!fs.existsSync(file)) fs.writeFileSync(file, body);
        res.writeHead(204).end();
      });
      return;
    }
    const file = path.join(root, decodeURIComponent(req.url.split("?")[0]));
    if (!file.startsWith(root) || !fs.existsSync(file)) { res.writeHead(404); return res.end(); }
    const csp = req.url.endsWith("?csp") ? { "content-security-policy": "script-src \x27self\x27" } : {};
    res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream", ...csp });
    fs.createReadStream(file).pipe(res);
  }).listen(0, "127.0.0.1", () => fs.writeFileSync(path.join(root, "port"), String(server.address().port)));
  setTimeout(() => server.close(), 75000).unref();
' "$out" &
server=$!
browser=""
trap 'kill $server $browser 2>/dev/null || true; wait 2>/dev/null; rm -rf "$out"' EXIT
# The server takes a free port and names it once it listens. NOTE: a fixed 0.5 s sleep lost the race
# on a loaded machine (Chromium then got a refused connection and the page no result), and a random
# port may be another program's.
for _ in $(seq 100); do
  [ -s "$out/port" ] && break
  sleep 0.1
done
[ -s "$out/port" ] || { echo "browser-check: the page server did not start"; exit 1; }
port=$(cat "$out/port")
# Headless Chromium without --dump-dom keeps the page open until it is stopped.
timeout 70 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$out/profile" "http://127.0.0.1:$port/index.html" 2>"$out/chromium.log" >/dev/null &
browser=$!
wait_s=60
for _ in $(seq $((wait_s * 10))); do
  [ -s "$out/result.txt" ] && break
  kill -0 $browser 2>/dev/null || break
  sleep 0.1
done
if [ -s "$out/result.txt" ]; then result="$(cat "$out/result.txt")"
elif kill -0 $browser 2>/dev/null; then result="no result from the page within $wait_s s"
else result="Chromium exited before the page reported"; fi
echo "browser-check: $result"
# On failure, what Chromium said (its complaints about D-Bus, which a container lacks, left out).
[[ "$result" == ok* ]] || { grep -v dbus "$out/chromium.log" | tail -20; exit 1; }
