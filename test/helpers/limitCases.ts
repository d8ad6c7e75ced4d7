// Configurations past any sane limit (and one at a real model's size), run one per child process by
// test/adversarial/limits.test.ts: a case that allocates gigabytes or loops for minutes must not
// take the test run down with it. Run directly: `node --import tsx test/helpers/limitCases.ts <index>`.
import { createCache, LLAMA3_8B, loadCache, ShadowKVCache, type Cache } from '../../packages/shadowkv/src/backend.js';
import { openSnapshot, sealSnapshot } from './adversarial.js';

const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const backend = 'wasm';

/**
 * A small snapshot (40 tokens in 2 rows; compressed by one decode step when `compressed`) whose
 * content `edit` changed, loaded with a valid checksum.
 */
async function loadEdited(edit: (content: Record<string, any>) => void, compressed = false): Promise<Cache> {
  const cache = await createCache({ spec, backend, batch: 2, dtype: 'f32', options: { rank: 8, chunkSize: 4, budget: 16, localTokens: 8, maxRecentTokens: 16, denseThreshold: 16, hostPageChunks: 4 } });
  const t = (S: number) => ({ data: Float32Array.from({ length: 2 * spec.kvHeads * S * spec.headDim }, (_, i) => Math.sin(i * 0.37)), shape: [2, spec.kvHeads, S, spec.headDim], dtype: 'f32' as const });
  for (let l = 0; l < spec.layers; l++) cache.prefill(l, { keys: t(20), values: t(20) });
  if (compressed) {
    const q = { data: new Float32Array(2 * spec.queryHeads * spec.headDim).fill(0.1), shape: [2, spec.queryHeads, 1, spec.headDim], dtype: 'f32' as const };
    for (let l = 0; l < spec.layers; l++) cache.decode(l, { query: q, key: t(1), value: t(1) });
  }
  const { envelope, content } = openSnapshot(cache.save());
  cache.dispose();
  edit(content);
  return loadCache(sealSnapshot(envelope, content), { backend });
}

/** What a case must end with: a typed error, success, or either (then only its time and memory count). */
export type Expect = 'typed' | 'ok' | 'either';

/** [label, what it must end with, the call]. */
export const LIMIT_CASES: [string, Expect, () => unknown][] = [
  ['spec.layers 2^31', 'typed', () => createCache({ spec: { ...spec, layers: 2 ** 31 }, backend })],
  ['spec.layers 1e6', 'typed', () => createCache({ spec: { ...spec, layers: 1e6 }, backend })],
  ['spec.kvHeads and queryHeads 2^20', 'typed', () => createCache({ spec: { ...spec, kvHeads: 2 ** 20, queryHeads: 2 ** 20 }, backend })],
  ['spec.queryHeads 2^31', 'typed', () => createCache({ spec: { ...spec, queryHeads: 2 ** 31 }, backend })],
  ['spec.headDim 2^26', 'typed', () => createCache({ spec: { ...spec, headDim: 2 ** 26 }, backend })],
  ['batch 2^31', 'typed', () => createCache({ spec, backend, batch: 2 ** 31 })],
  ['batch 1e6', 'typed', () => createCache({ spec, backend, batch: 1e6 })],
  ['maxTokens 2^40 (positions are int32 in the runtime)', 'typed', () => createCache({ spec, backend, maxTokens: 2 ** 40 })],
  ['option budget 2^40', 'typed', () => createCache({ spec, backend, options: { budget: 2 ** 40 } })],
  ['option outlierChunks 2^31', 'typed', () => createCache({ spec, backend, options: { outlierChunks: 2 ** 31 } })],
  ['option hostPageChunks 2^31', 'typed', () => createCache({ spec, backend, options: { hostPageChunks: 2 ** 31 } })],
  ['option localTokens 2^40', 'typed', () => createCache({ spec, backend, options: { localTokens: 2 ** 40 } })],
  ['option maxRecentTokens 2^40', 'typed', () => createCache({ spec, backend, options: { maxRecentTokens: 2 ** 40 } })],
  ['option sinkTokens 2^40', 'typed', () => createCache({ spec, backend, options: { sinkTokens: 2 ** 40 } })],
  ['option svdPowerIters 2^31', 'typed', () => createCache({ spec, backend, options: { svdPowerIters: 2 ** 31 } })],
  ['option svdOversample 2^31', 'typed', () => createCache({ spec, backend, options: { svdOversample: 2 ** 31 } })],
  ['option chunkSize and budget 2^31', 'typed', () => createCache({ spec, backend, options: { chunkSize: 2 ** 31, budget: 2 ** 31, maxRecentTokens: 2 ** 31 } })],
  ['new ShadowKVCache with hostPageChunks 2^31', 'typed', () => new ShadowKVCache({ spec, backend, hostPageChunks: 2 ** 31 })],
  ['new ShadowKVCache with spec.layers 2^31', 'typed', () => new ShadowKVCache({ spec: { ...spec, layers: 2 ** 31 }, backend })],
  ['a small snapshot recording spec.layers 1e6', 'typed', () => loadEdited((c) => (c.spec.layers = 1e6))],
  ['a small snapshot recording spec.layers 2^31', 'typed', () => loadEdited((c) => (c.spec.layers = 2 ** 31))],
  ['a small snapshot recording spec.kvHeads and queryHeads 2^20', 'typed', () => loadEdited((c) => ((c.spec.kvHeads = 2 ** 20), (c.spec.queryHeads = 2 ** 20)))],
  ['a small snapshot recording spec.headDim 2^20', 'typed', () => loadEdited((c) => (c.spec.headDim = 2 ** 20))],
  ['a small snapshot recording cache.batch 1e6', 'typed', () => loadEdited((c) => (c.cache.batch = 1e6))],
  ['a small snapshot recording cache.batch 2^31', 'typed', () => loadEdited((c) => (c.cache.batch = 2 ** 31))],
  ['a small snapshot whose store.tokens is 2^24', 'typed', () => loadEdited((c) => (c.layers[0][0].store.tokens = 2 ** 24), true)],
  ['a small snapshot whose store.tokens is 1e6', 'typed', () => loadEdited((c) => (c.layers[0][0].store.tokens = 1e6), true)],
  ['a small snapshot whose store.rank is 1e6', 'typed', () => loadEdited((c) => (c.layers[0][0].store.rank = 1e6), true)],
  ['spec.layers 1e4: accepted or rejected, within the time bound', 'either', () => createCache({ spec: { ...spec, layers: 1e4 }, backend })],
  ['spec.layers 1e5: accepted or rejected, within the time bound', 'either', () => createCache({ spec: { ...spec, layers: 1e5 }, backend })],
  ['Llama-3-8B, batch 1, maxTokens 32768 (a real size that fits the 4 GB wasm heap: must be accepted)', 'ok', () => createCache({ spec: LLAMA3_8B, backend, batch: 1, maxTokens: 32768 })],
  ['Llama-3-8B, batch 4, maxTokens 131072 (44 GiB: refused up front on wasm, an OutOfMemoryError)', 'typed', () => createCache({ spec: LLAMA3_8B, backend, batch: 4, maxTokens: 131072 })],
  ['Llama-3-8B, batch 4096, maxTokens 2^31 - 1 (zettabytes: refused up front)', 'typed', () => createCache({ spec: LLAMA3_8B, backend, batch: 4096, maxTokens: 2 ** 31 - 1 })],
];

export interface LimitOutcome {
  label: string;
  outcome: 'typed' | 'untyped' | 'ok';
  detail: string;
  ms: number;
  /** Peak RSS growth of the child over the case, MB. */
  rssGrowthMB: number;
}

/** Runs one case in this process and prints its outcome as one JSON line. */
async function main(index: number): Promise<void> {
  const [label, , call] = LIMIT_CASES[index]!;
  const { ShadowKVError } = await import('../../packages/shadowkv/src/backend.js');
  (await createCache({ spec, backend })).dispose(); // compile the runtime before timing
  const rssBefore = process.memoryUsage().rss / 2 ** 20;
  const peakBefore = process.resourceUsage().maxRSS / 1024;
  const start = performance.now();
  let outcome: LimitOutcome['outcome'] = 'ok';
  let detail = '';
  try {
    const made = (await call()) as Cache | undefined;
    made?.dispose?.();
  } catch (err) {
    outcome = err instanceof ShadowKVError ? 'typed' : 'untyped';
    detail = `${(err as Error)?.constructor?.name} ${(err as { code?: string }).code ?? ''}: ${String((err as Error)?.message).slice(0, 200)}`;
  }
  const ms = performance.now() - start;
  // NOTE: maxRSS is the process's peak; a case that stayed below the startup peak is measured by its current RSS.
  const peak = process.resourceUsage().maxRSS / 1024;
  const rssGrowthMB = (peak > peakBefore ? peak : process.memoryUsage().rss / 2 ** 20) - rssBefore;
  console.log(JSON.stringify({ label, outcome, detail, ms, rssGrowthMB } satisfies LimitOutcome));
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) await main(Number(process.argv[2]));
