// The SDK as a web developer uses it: the runtime fetched over HTTP (404, offline, a server's HTML
// page, truncated bytes, a Content-Security-Policy), `wasmBinary` in every shape a page has bytes
// in, and caches inside workers with tensors and snapshots posted across (transferred, so the
// sender's arrays are detached). Each failure is a typed error that names its cause and its fix.
// The fetch path is the one every host without `process.getBuiltinModule` takes (browsers,
// workers, Deno); here it runs under Node with that hidden and `fetch` replaced.
import { mkdtempSync, cpSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { build } from 'esbuild';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createCache, createWasmBackend, loadCache, ShapeError, SnapshotError, WasmInitError, type Tensor } from '../../packages/shadowkv/src/backend.js';

const WASM = readFileSync(new URL('../../runtime/wasm/out/shadowkv-simd.wasm', import.meta.url));

/** The rejection of `f()`, which must be one. */
async function rejection(f: () => unknown): Promise<Error> {
  try {
    await f();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

/** Transfers `a`'s buffer away, as `postMessage(x, [a.buffer])` does: `a` is left detached. */
function transferAway<T extends ArrayBufferView>(a: T): T {
  structuredClone(a.buffer, { transfer: [a.buffer as ArrayBuffer] });
  return a;
}

describe('the runtime fetched as in a browser', () => {
  const getBuiltinModule = (process as { getBuiltinModule?: unknown }).getBuiltinModule;
  let urls: string[] = [];
  const serve = (answer: (url: string) => Promise<Response>) => {
    urls = [];
    (process as { getBuiltinModule?: unknown }).getBuiltinModule = undefined; // as in a browser: no fs, so fetch
    vi.stubGlobal('fetch', (url: URL) => (urls.push(url.href), answer(url.href)));
  };
  afterEach(() => {
    (process as { getBuiltinModule?: unknown }).getBuiltinModule = getBuiltinModule;
    vi.unstubAllGlobals();
    vi.restoreAllMocks();
  });

  it('a 404 names each URL tried with its status, and says to serve dist/wasm beside the bundle', async () => {
    serve(async () => new Response('no', { status: 404, statusText: 'Not Found' }));
    const err = await rejection(() => createWasmBackend({ variant: 'simd' }));
    expect(err).toBeInstanceOf(WasmInitError);
    expect(urls.length).toBe(2);
    for (const url of urls) expect(err.message).toContain(`${url} (HTTP 404 Not Found)`);
    expect(err.message).toContain('Serve node_modules/shadowkv/dist/wasm/ as wasm/ beside your bundle');
    expect(err.message).not.toContain('npm run build:wasm'); // a page cannot build it
  });

  it('fetch throwing (offline) is a WasmInitError that quotes why', async () => {
    serve(async () => Promise.reject(new TypeError('Failed to fetch')));
    const err = await rejection(() => createWasmBackend({ variant: 'simd' }));
    expect(err).toBeInstanceOf(WasmInitError);
    expect(err.message).toContain('(fetch failed: Failed to fetch)');
  });

  it('an HTML page served for the .wasm (a dev server fallback, any content type) is named as such, with its URL', async () => {
    serve(async () => new Response('<!doctype html><html><body>app</body></html>', { headers: { 'content-type': 'text/html' } }));
    const err = await rejection(() => createWasmBackend({ variant: 'simd' }));
    expect(err).toBeInstanceOf(WasmInitError);
    expect(err.message).toContain(`bytes from ${urls[0]}`);
    expect(err.message).toMatch(/not a \.wasm file: it begins with "<!doctype html><" \(HTML/);
  });

  it('truncated bytes name their URL and size; the whole file loads whatever its content type', async () => {
    serve(async () => new Response(WASM.subarray(0, 4000), { headers: { 'content-type': 'application/wasm' } }));
    const err = await rejection(() => createWasmBackend({ variant: 'simd' }));
    expect(err).toBeInstanceOf(WasmInitError);
    expect(err.message).toContain(`bytes from ${urls[0]}): 4000 bytes, truncated or corrupt`);
    // No compileStreaming, so a server that says text/plain still serves a usable runtime.
    serve(async () => new Response(WASM, { headers: { 'content-type': 'text/plain' } }));
    expect((await createWasmBackend({ variant: 'simd' })).name).toBe('wasm');
  });

  it("a Content-Security-Policy that blocks compiling is named, with 'wasm-unsafe-eval' as the fix", async () => {
    // What Chromium rejects with under `script-src 'self'` (the module itself is valid).
    const refusal = "WebAssembly.compile(): Refused to compile or instantiate WebAssembly module because 'unsafe-eval' is not an allowed source of script";
    vi.spyOn(WebAssembly, 'compile').mockRejectedValue(new WebAssembly.CompileError(refusal));
    const err = await rejection(() => createWasmBackend({ variant: 'simd', wasmBinary: WASM }));
    expect(err).toBeInstanceOf(WasmInitError);
    expect(err.message).toContain(refusal);
    expect(err.message).toContain("script-src allows 'wasm-unsafe-eval'; add it");
  });
});

describe('wasmBinary in the shapes a page has bytes in', () => {
  it('an ArrayBuffer, a view at an offset, a DataView and a SharedArrayBuffer load; detached or not bytes is a WasmInitError saying so', async () => {
    const padded = new Uint8Array(WASM.length + 8);
    padded.set(WASM, 8);
    const shared = new Uint8Array(new SharedArrayBuffer(WASM.length));
    shared.set(WASM);
    for (const wasmBinary of [padded.buffer.slice(8), padded.subarray(8), new DataView(padded.buffer, 8), shared]) {
      expect((await createWasmBackend({ variant: 'simd', wasmBinary: wasmBinary as Uint8Array })).name).toBe('wasm');
    }
    const detached = await rejection(() => createWasmBackend({ variant: 'simd', wasmBinary: transferAway(new Uint8Array(WASM)) }));
    expect(detached).toBeInstanceOf(WasmInitError);
    expect(detached.message).toMatch(/^wasmBinary holds no bytes: its ArrayBuffer is detached/);
    const response = await rejection(() => createWasmBackend({ variant: 'simd', wasmBinary: new Response(WASM) as unknown as Uint8Array }));
    expect(response).toBeInstanceOf(WasmInitError);
    expect(response.message).toContain('got [object Response]; from fetch: new Uint8Array(await response.arrayBuffer())');
  });
});

describe('detached arrays (transferred with postMessage) given to a cache', () => {
  const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
  const f32 = (shape: number[]): Tensor => ({ data: new Float32Array(shape.reduce((a, b) => a * b)).map((_, i) => Math.sin(i)), shape, dtype: 'f32' });
  const detached = (shape: number[]): Tensor => ({ ...f32(shape), data: transferAway(new Float32Array(shape.reduce((a, b) => a * b))) });

  it('are a ShapeError naming the detached buffer in every call that takes host arrays, with the cache unchanged', async () => {
    const cache = await createCache({ spec, policy: 'full', dtype: 'f32', maxTokens: 64 });
    const [prompt, step] = [[1, 2, 7, 16], [1, 2, 1, 16]];
    const calls: [string, () => unknown][] = [
      ['prefill keys', () => cache.prefill(0, { keys: detached(prompt), values: f32(prompt) })],
      ['decode query', () => cache.decode(0, { query: detached([1, 4, 1, 16]), key: f32(step), value: f32(step) })],
      ['decode out', () => cache.decode(0, { query: f32([1, 4, 1, 16]), key: f32(step), value: f32(step) }, { out: transferAway(new Float32Array(64)) })],
      ['DeviceTensor.write', () => cache.allocTensor([1, 4, 1, 16], 'f32').write(transferAway(new Float32Array(64)))],
      ['DeviceTensor.read', () => cache.allocTensor([1, 4, 1, 16], 'f32').read(transferAway(new Float32Array(64)))],
    ];
    for (const [what, call] of calls) {
      expect(call, what).toThrow(ShapeError);
      expect(call, what).toThrow(/its ArrayBuffer is detached: it was transferred \(postMessage/);
    }
    expect(cache.length()).toBe(0);
    cache.dispose();
  });
});

// A worker of the user's own: the SDK bundled with esbuild (as a bundler does), the wasm beside it.
const WORKER = `
import { parentPort } from 'node:worker_threads';
import { FullKVCache, loadCache } from './packages/shadowkv/src/index.js';
parentPort.once('message', async ({ spec, prompt, steps }) => {
  // Under Node (worker_threads too) a constructor may run before ready(): the runtime compiles synchronously.
  const cache = new FullKVCache({ spec, dtype: 'bf16', maxTokens: 256, backend: 'wasm' });
  cache.prefill(0, prompt);
  cache.decode(0, steps[0]);
  const bytes = cache.save();
  const next = cache.decode(0, steps[1]);
  parentPort.postMessage({ bytes, next, backend: cache.backendInfo.description }, [bytes.buffer, next.data.buffer]);
  const errors = {};
  try { await loadCache(bytes); } catch (err) { errors.load = err.name + ': ' + err.message; }
  try { parentPort.postMessage(cache); } catch (err) { errors.post = err.name + ': ' + err.message; }
  cache.dispose();
  parentPort.postMessage({ errors });
});
`;

describe('a cache inside a worker_threads worker', () => {
  let dir = '';
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'skv-worker-'));
    await build({
      stdin: { contents: WORKER, resolveDir: new URL('../..', import.meta.url).pathname, loader: 'js' },
      bundle: true, format: 'esm', platform: 'node', target: 'es2022', outfile: join(dir, 'worker.mjs'), logLevel: 'warning',
    });
    cpSync(new URL('../../runtime/wasm/out', import.meta.url), join(dir, 'wasm'), { recursive: true });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('prefills, decodes and saves there; the transferred snapshot loads here and continues bit for bit', async () => {
    const spec = { layers: 1, queryHeads: 8, kvHeads: 2, headDim: 32, rope: { theta: 10000 } };
    const rnd = (shape: number[], seed: number): Tensor => ({ data: new Float32Array(shape.reduce((a, b) => a * b)).map((_, i) => Math.sin(i * 0.37 + seed)), shape, dtype: 'f32' });
    const prompt = { keys: rnd([1, 2, 37, 32], 1), values: rnd([1, 2, 37, 32], 2) };
    const steps = [0, 1, 2].map((s) => ({ query: rnd([1, 8, 1, 32], 10 + s), key: rnd([1, 2, 1, 32], 20 + s), value: rnd([1, 2, 1, 32], 30 + s) }));
    const worker = new Worker(join(dir, 'worker.mjs'));
    const messages: Record<string, unknown>[] = [];
    const done = new Promise<void>((resolve, reject) => {
      worker.on('message', (m) => messages.push(m) === 2 && resolve());
      worker.on('error', reject);
    });
    // The prompt moves to the worker: this thread's arrays are detached, and a cache here says so.
    const sent = { keys: prompt.keys, values: prompt.values };
    const kept = { keys: { ...sent.keys, data: sent.keys.data.slice() }, values: { ...sent.values, data: sent.values.data.slice() } };
    worker.postMessage({ spec, prompt: sent, steps: steps.slice(0, 2) }, [sent.keys.data.buffer as ArrayBuffer, sent.values.data.buffer as ArrayBuffer]);
    const here = await createCache({ spec, policy: 'full', dtype: 'bf16', maxTokens: 256, backend: 'wasm' });
    expect(() => here.prefill(0, sent)).toThrow(/keys\.data holds no elements \(its ArrayBuffer is detached/);
    here.dispose();
    await Promise.race([done, new Promise((_, reject) => setTimeout(() => reject(new Error('the worker did not answer in 30 s')), 30_000))]);
    await worker.terminate();

    const [{ bytes, next, backend }, { errors }] = messages as [{ bytes: Uint8Array; next: Tensor; backend: string }, { errors: Record<string, string> }];
    expect(backend).toBe('wasm (simd)');
    // The worker's arrays went with the message: loading its sent bytes there is a SnapshotError saying why.
    expect(errors.load).toMatch(/^SnapshotError: loadCache: the snapshot's bytes hold nothing \(its ArrayBuffer is detached/);
    // A cache cannot be posted (its wasm heap is not cloneable): post save()'s bytes instead (docs/guide.md).
    expect(errors.post).toMatch(/^DataCloneError/);
    const restored = await loadCache(bytes);
    expect(Array.from(restored.decode(0, steps[1]).data)).toEqual(Array.from(next.data));
    // And the same as one cache on this thread that never moved.
    const local = await createCache({ spec, policy: 'full', dtype: 'bf16', maxTokens: 256, backend: 'wasm' });
    local.prefill(0, kept);
    local.decode(0, steps[0]);
    expect(Array.from(local.decode(0, steps[1]).data)).toEqual(Array.from(next.data));
    expect(Array.from(restored.decode(0, steps[2]).data)).toEqual(Array.from(local.decode(0, steps[2]).data));
    restored.dispose();
    local.dispose();
  });

  it('loadCache of snapshot bytes that were transferred away is a SnapshotError naming the detached buffer', async () => {
    const cache = await createCache({ spec: { layers: 1, queryHeads: 2, kvHeads: 1, headDim: 8, rope: { theta: 10000 } }, policy: 'full', maxTokens: 16 });
    const bytes = transferAway(cache.save());
    const err = await rejection(() => loadCache(bytes));
    expect(err).toBeInstanceOf(SnapshotError);
    expect(err.message).toMatch(/hold nothing \(its ArrayBuffer is detached/);
    cache.dispose();
  });
});
