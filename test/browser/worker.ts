// Bundled as worker.js by scripts/browser-check.sh and started from the page as a module worker: the
// SDK fetches its wasm beside this bundle, makes a cache, saves it and posts the bytes (transferred).
// The page also starts it served with `Content-Security-Policy: script-src 'self'`, which blocks compiling.
import { createCache, loadCache, SnapshotError } from '../../packages/shadowkv/src/index.js';

const f32 = (shape: number[], seed: number) => ({ data: new Float32Array(shape.reduce((a, b) => a * b)).map((_, i) => Math.sin(i * 0.37 + seed)), shape, dtype: 'f32' as const });
try {
  const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
  const cache = await createCache({ spec, policy: 'full', dtype: 'f32', maxTokens: 64 });
  cache.prefill(0, { keys: f32([1, 2, 9, 16], 1), values: f32([1, 2, 9, 16], 2) });
  const bytes = cache.save(), copy = bytes.slice();
  const step = { query: f32([1, 4, 1, 16], 3), key: f32([1, 2, 1, 16], 4), value: f32([1, 2, 1, 16], 5) };
  const a = cache.decode(0, step).data, b = (await loadCache(copy)).decode(0, step).data;
  (postMessage as (message: unknown, transfer: ArrayBuffer[]) => void)(bytes, [bytes.buffer as ArrayBuffer]); // NOTE: what a page does with a snapshot; `bytes` is detached afterwards
  const detached = await loadCache(bytes).then(() => 'loaded', (err) => (err instanceof SnapshotError && /detached/.test(err.message) ? 'SnapshotError' : String(err)));
  const same = a.every((x, i) => x === b[i]);
  postMessage(same && detached === 'SnapshotError' ? 'ok' : `error restored=${same} detached=${detached}`);
} catch (err) {
  postMessage(`error ${(err as Error).name}: ${(err as Error).message}`);
}
