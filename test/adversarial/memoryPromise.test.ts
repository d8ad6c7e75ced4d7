// The memory promise: out of memory is known at creation. A cache made at the largest maxTokens the
// creation check accepts for a pool (the wasm heap scaled down, counted to the byte) takes a whole
// prompt with queries in one call, decodes to maxTokens, crops, resets and reloads without running
// out; and an allocation that fails later is an OutOfMemoryError that leaves the cache as it was.
import { describe, expect, it } from 'vitest';
import {
  BUFFER_BYTES, createCache, estimateMemory, fromNumbers, loadCache, OutOfMemoryError, registerBackend, resolveBackend, ShadowKVCache, type Backend, type Cache, type Device, type ModelSpec,
} from '../../packages/shadowkv/src/backend.js';
import { KitInputs } from '../../packages/shadowkv/src/testing/index.js';
import { forEachEnv, type TestEnv } from '../envs.js';

const MiB = 2 ** 20;

/** Per pool: the most both tiers held at once, over every device made since the last reset. */
const peaks = new Map<number, number>();

/**
 * Registers `'wasm-exact-<bytes>'`: wasm of one pool of `bytes` (its maxBytes, which the creation
 * check reads) whose allocations past it fail as a full heap's would, counted as the ledger counts them.
 */
const pools = new Map<string, () => Promise<Backend>>();
function poolWasm(bytes: number): string {
  const name = `wasm-exact-${bytes}`;
  // One factory per name, so that every env's suite may ask again.
  const factory = pools.get(name) ?? (async (): Promise<Backend> => {
    const { backend } = await resolveBackend('wasm');
    return {
      ...backend, name, createDevice: () => {
        const device: Device = backend.createDevice();
        const alloc = device.alloc.bind(device);
        return Object.assign(device, {
          maxBytes: bytes,
          alloc: ((length, dtype, tag, tier) => {
            const held = device.memory();
            const after = held.device + held.host + Math.max(length, 1) * BUFFER_BYTES[dtype];
            if (after > bytes) throw new OutOfMemoryError(`pool: ${tag} past the pool's ${bytes} bytes`);
            peaks.set(bytes, Math.max(peaks.get(bytes) ?? 0, after));
            return alloc(length, dtype, tag, tier);
          }) as Device['alloc'],
        });
      },
    };
  });
  pools.set(name, factory);
  registerBackend(name, factory, 0);
  return name;
}

/** The largest maxTokens creation accepts on `backend` at this batch (from its refusal of 2^20 tokens). */
async function edge(backend: string, config: object): Promise<number> {
  try {
    (await createCache({ ...config, backend, maxTokens: 1 << 20 } as never)).dispose();
    return 1 << 20;
  } catch (err) {
    expect(err).toBeInstanceOf(OutOfMemoryError);
    return Number(/What fits: maxTokens (\d+) at batch/.exec((err as Error).message)?.[1] ?? 0);
  }
}

const gqa: ModelSpec = { layers: 2, queryHeads: 8, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const mqa: ModelSpec = { layers: 3, queryHeads: 6, kvHeads: 1, headDim: 24, rope: { theta: 10000 } };
const mha: ModelSpec = { layers: 1, queryHeads: 3, kvHeads: 3, headDim: 8, rope: { theta: 10000 } };
const CASES: [string, ModelSpec, string, object, number][] = [
  ['full, GQA', gqa, 'full', {}, 3],
  ['full, MQA', mqa, 'full', {}, 1],
  ['shadowkv, GQA, batch 3', gqa, 'shadowkv', { budget: 32, rank: 12, chunkSize: 8, localTokens: 16, maxRecentTokens: 40, denseThreshold: 64 }, 3],
  ['shadowkv, MHA, chunks of 1', mha, 'shadowkv', { budget: 6, rank: 5, chunkSize: 1, localTokens: 3, maxRecentTokens: 7, denseThreshold: 32 }, 2],
  ['shadowkv, MQA, odd chunks', mqa, 'shadowkv', { budget: 21, rank: 7, chunkSize: 7, localTokens: 5, maxRecentTokens: 13, denseThreshold: 40, outlierChunks: 3 }, 2],
  ['streaming, GQA', gqa, 'streaming', { sinkTokens: 3, windowTokens: 61 }, 2],
  ['streaming, MQA', mqa, 'streaming', { sinkTokens: 0, windowTokens: 17 }, 1],
  ['quest, chunks of 1', gqa, 'quest', { budget: 8, chunkSize: 1 }, 2],
  ['quest, MQA, odd chunks', mqa, 'quest', { budget: 15, chunkSize: 5, recentTokens: 3 }, 2],
  ['snapkv, GQA', gqa, 'snapkv', { budget: 40, windowTokens: 8 }, 3],
  ['snapkv, MHA', mha, 'snapkv', { budget: 9, windowTokens: 2, kernelSize: 3 }, 1],
];

/** The whole prompt (maxTokens - 3 tokens) with queries in one call per layer, decode to maxTokens, crop, decode, save, reset, reload. */
function fill(cache: Cache, spec: ModelSpec, maxTokens: number): Uint8Array {
  const inputs = new KitInputs(11, spec);
  const B = cache.batch;
  for (let l = 0; l < spec.layers; l++) cache.prefill(l, inputs.prompt(B, maxTokens - 3, true));
  for (let t = 0; t < 3; t++) for (let l = 0; l < spec.layers; l++) cache.decode(l, inputs.step(B));
  expect(cache.length(0)).toBe(maxTokens);
  cache.crop(0, maxTokens - 1);
  for (let l = 0; l < spec.layers; l++) cache.decode(l, inputs.step(1), { sequences: [0] });
  const saved = cache.save();
  cache.reset();
  return saved;
}

forEachEnv('memory promise', (env: TestEnv) => {
  describe('a cache made at the edge of its pool', () => {
    const pool = 3 * MiB + 12345;
    const backend = poolWasm(pool);

    it.each(CASES)('%s: fills to maxTokens, crops, resets and reloads without running out', async (_, spec, policy, options, batch) => {
      const config = { spec, policy, batch, dtype: env.dtype, options };
      const maxTokens = await edge(backend, config);
      expect(maxTokens, 'the pool holds a few hundred tokens a row').toBeGreaterThan(64);
      peaks.set(pool, 0);
      const cache = await createCache({ ...config, backend, maxTokens } as never);
      const saved = fill(cache, spec, maxTokens);
      cache.dispose();
      const back = await loadCache(saved, { backend });
      expect(back.length(0)).toBe(maxTokens);
      back.dispose();
      // Not a gross overcount either: the peak is at least a fifth of the pool the estimate filled.
      expect(peaks.get(pool)!, `peak ${peaks.get(pool)} of ${pool}`).toBeGreaterThan(pool / 5);
    }, 60_000);
  });

  it('streaming is sized by its window, not as full attention: at 8 layers it takes 1.5x the maxTokens full does (its prompt call, not 8 layers of rows)', async () => {
    const backend = poolWasm(4 * MiB);
    const spec = { ...gqa, layers: 8 };
    const config = { spec, batch: 1, dtype: env.dtype };
    const full = await edge(backend, { ...config, policy: 'full' });
    const streaming = await edge(backend, { ...config, policy: 'streaming', options: { windowTokens: 64 } });
    expect(streaming).toBeGreaterThan(1.5 * full);
  });

  it('no scratch buffer is kept at the size of a whole prompt: quest summarizes in blocks, prefill converts 16-bit outputs per call', async () => {
    const spec = gqa;
    const S = 8000;
    for (const [policy, options] of [['full', {}], ['quest', { budget: 8, chunkSize: 2 }]] as const) {
      const cache = await createCache({ spec, policy, dtype: env.dtype, backend: 'wasm', options });
      const p = new KitInputs(3, spec).prompt(1, S, true);
      const bf16 = (t: { data: unknown; shape: readonly number[] }) => ({ data: fromNumbers(t.data as Float32Array, 'bf16'), shape: t.shape, dtype: 'bf16' as const });
      for (let l = 0; l < spec.layers; l++) cache.prefill(l, { keys: bf16(p.keys), values: bf16(p.values), queries: bf16(p.queries!) });
      const scratch = cache.memory().components.scratch ?? 0;
      // A whole prompt's keys of one head in f32 are S x headDim x 4 = 512 KB; the kept scratch is less.
      expect(scratch, `${policy}: ${JSON.stringify(cache.memory().components)}`).toBeLessThan(S * spec.headDim * 4);
      cache.dispose();
    }
  });

  it('prefillRows: rows filled and compressed one at a time peak within estimateMemory({ prefillRows: 1 }), which counts batch - 1 dense rows less', async () => {
    const options = { budget: 32, rank: 12, chunkSize: 8, localTokens: 16, maxRecentTokens: 40, denseThreshold: 64 };
    const B = 4, S = 600, maxTokens = 640;
    const q = { spec: gqa, tokens: S, batch: B, maxTokens, dtype: env.dtype, options };
    const all = estimateMemory(q), one = estimateMemory({ ...q, prefillRows: 1 });
    const denseRow = 2 * gqa.kvHeads * S * gqa.headDim * BUFFER_BYTES[env.dtype];
    expect(all.transient - one.transient).toBe((B - 1) * denseRow);
    expect(one.device).toBe(all.device);
    const pool = 64 * MiB;
    const backend = poolWasm(pool);
    peaks.set(pool, 0);
    const cache = (await createCache({ spec: gqa, policy: 'shadowkv', batch: B, dtype: env.dtype, backend, maxTokens, options })) as ShadowKVCache;
    const inputs = new KitInputs(9, gqa);
    for (let i = 0; i < B; i++) {
      for (let l = 0; l < gqa.layers; l++) cache.prefill(l, { ...inputs.prompt(1, S, true), sequences: [i] });
      cache.compress({ sequences: [i] });
    }
    for (let t = 0; t < maxTokens - S; t++) for (let l = 0; l < gqa.layers; l++) cache.decode(l, inputs.step(B));
    const peak = peaks.get(pool)!;
    expect(peak, `peak ${peak}, estimate ${one.device + one.host + one.transient}`).toBeLessThanOrEqual(one.device + one.host + one.transient);
    cache.dispose();
    for (const bad of [0, B + 1, 1.5, '2']) expect(() => estimateMemory({ ...q, prefillRows: bad as never }), String(bad)).toThrow(/prefillRows must be an integer in \[1, batch = 4\]/);
  });

  it('an allocation that fails after creation is an OutOfMemoryError leaving the cache as it was, and usable after', async () => {
    const pool = 2 * MiB;
    const backend = poolWasm(pool);
    const options = { budget: 32, rank: 12, chunkSize: 8, localTokens: 16, maxRecentTokens: 40, denseThreshold: 64 };
    const cache = await createCache({ spec: gqa, policy: 'shadowkv', batch: 2, dtype: env.dtype, backend, maxTokens: 500, options });
    const inputs = new KitInputs(5, gqa);
    for (let l = 0; l < gqa.layers; l++) cache.prefill(l, inputs.prompt(2, 300));
    // The caller's own tensor takes what is left, less a few KB: compression (the first step) cannot fit.
    const held = cache.memory();
    const filler = cache.allocTensor([Math.floor((pool - held.device - held.host - 4096) / 4)], 'f32');
    const before = cache.save();
    const calls: [string, () => unknown][] = [
      ['decode', () => cache.decode(0, inputs.step(2))],
      ['compress', () => (cache as unknown as { compress(): number }).compress()],
      ['prefill with queries', () => cache.prefill(1, inputs.prompt(2, 200, true))],
    ];
    for (const [what, call] of calls) {
      expect(call, what).toThrow(OutOfMemoryError);
      expect(cache.save(), `${what} changed the cache`).toEqual(before);
    }
    filler.dispose();
    for (let l = 0; l < gqa.layers; l++) cache.decode(l, inputs.step(2));
    expect(cache.length(0)).toBe(301);
    cache.dispose();
  });
}, (e) => e.name.startsWith('wasm'));
