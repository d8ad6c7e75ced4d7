// Extreme but legal configurations: geometries and options at the edges of what the docs accept.
// Each runs a prompt with queries, a few decode steps, a crop and a save/load without a trap, with
// finite outputs, `full`'s outputs where it attends every token, and no more memory than a row of
// maxTokens needs, as estimateMemory says.
import { expect, it } from 'vitest';
import { createCache, estimateMemory, loadCache, toFloat32, type Cache, type ModelSpec } from '../../packages/shadowkv/src/backend.js';
import { KitInputs, relError } from '../../packages/shadowkv/src/testing/index.js';
import { forEachEnv, type TestEnv } from '../envs.js';

const spec: ModelSpec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const tight = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 };
// Exact on every token: rank the key width, a budget past the row.
const exact = { ...tight, rank: 32, budget: 65536 };
const MiB = 2 ** 20;

interface Run {
  outs: Float32Array[];
  cache: Cache;
}

/** Prefill S tokens with queries at every layer, then `steps` decode steps; returns every output. */
function drive(cache: Cache, s: ModelSpec, S: number, steps: number, seed = 7): Float32Array[] {
  const inputs = new KitInputs(seed, s);
  const outs: Float32Array[] = [];
  for (let l = 0; l < s.layers; l++) outs.push(toFloat32(cache.prefill(l, inputs.prompt(cache.batch, S, true))!));
  for (let t = 0; t < steps; t++) for (let l = 0; l < s.layers; l++) outs.push(toFloat32(cache.decode(l, inputs.step(cache.batch))));
  return outs;
}

async function runCase(env: TestEnv, s: ModelSpec, policy: string, options: object, o: { batch?: number; maxTokens?: number; S?: number; steps?: number } = {}): Promise<Run> {
  const cache = (await createCache({ spec: s, policy: policy as 'full', batch: o.batch ?? 1, dtype: env.dtype, backend: env.backend, maxTokens: o.maxTokens ?? 200, options: options as never })) as Cache;
  return { cache, outs: drive(cache, s, o.S ?? 120, o.steps ?? 3) };
}

/** Crop every row by one token, save, load: the loaded cache's next step equals the original's. */
async function cropSaveLoad(cache: Cache, s: ModelSpec): Promise<void> {
  for (let r = 0; r < cache.batch; r++) cache.crop(r, cache.length(r) - 1);
  const again = await loadCache(cache.save(), { backend: cache.backendInfo.name });
  const step = new KitInputs(99, s).step(cache.batch);
  expect(Array.from(toFloat32(again.decode(0, step)))).toEqual(Array.from(toFloat32(cache.decode(0, step))));
  again.dispose();
}

const finite = (outs: Float32Array[], label: string) => outs.forEach((x, i) => expect(x.every(Number.isFinite), `${label}: output ${i} is not finite`).toBe(true));

forEachEnv('extremes: a recent window or local window far past maxTokens', (env) => {
  // maxRecentTokens 2^20 at maxTokens 200 sized every compressed row's tail and store for 2^20
  // tokens: ~940 MB of wasm heap for 200 tokens (2.6 s at the first decode step), and an estimate
  // that refused batch 8 as out of memory.
  it('maxRecentTokens 2^20 at maxTokens 200: memory and estimateMemory stay those of a row of 200 tokens, outputs those of maxRecentTokens 200', async () => {
    const big = await runCase(env, spec, 'shadowkv', { ...tight, maxRecentTokens: 2 ** 20 });
    const ref = await runCase(env, spec, 'shadowkv', { ...tight, maxRecentTokens: 200 });
    expect(big.cache.stats().compressions).toBeGreaterThan(0);
    big.outs.forEach((x, i) => expect(Array.from(x), `output ${i}`).toEqual(Array.from(ref.outs[i]!)));
    const held = big.cache.memory();
    expect(held.device + held.host, `memory() ${JSON.stringify(held.components)}`).toBeLessThan(2 * MiB);
    const est = estimateMemory({ spec, tokens: 200, maxTokens: 200, dtype: env.dtype, options: { ...tight, maxRecentTokens: 2 ** 20 } });
    expect(est.device + est.host, `estimateMemory ${JSON.stringify(est.components)}`).toBeLessThan(2 * MiB);
    expect(held.device + held.host).toBeLessThanOrEqual(2 * (est.device + est.host + est.transient));
    await cropSaveLoad(big.cache, spec);
    [big.cache, ref.cache].forEach((c) => c.dispose());
  });

  it('maxRecentTokens 2^20 at maxTokens 200 and batch 8: created (the rows fit), not refused as out of memory', async () => {
    const { cache, outs } = await runCase(env, spec, 'shadowkv', { ...tight, maxRecentTokens: 2 ** 20 }, { batch: 8, S: 100, steps: 2 });
    finite(outs, 'batch 8');
    expect(cache.memory().device + cache.memory().host).toBeLessThan(8 * MiB);
    cache.dispose();
  });

  it('localTokens and maxRecentTokens past maxTokens, filled to maxTokens: memory within estimateMemory', async () => {
    const options = { ...tight, localTokens: 150, maxRecentTokens: 2 ** 20, denseThreshold: 160 };
    const { cache } = await runCase(env, spec, 'shadowkv', options, { S: 190, steps: 10 });
    expect(cache.length(0)).toBe(200);
    expect(cache.stats().compressions).toBeGreaterThan(0);
    const held = cache.memory();
    const est = estimateMemory({ spec, tokens: 200, maxTokens: 200, dtype: env.dtype, options });
    expect(est.device + est.host).toBeLessThan(2 * MiB);
    expect(held.device + held.host).toBeLessThanOrEqual(2 * (est.device + est.host + est.transient));
    cache.dispose();
  });
}, (e) => e.name.startsWith('wasm-'));

// Combinations that were fine when probed (docs' ranges at their ends): kept so that they stay so.
forEachEnv('extremes: legal edges run and match full where every token is attended', (env) => {
  const geometries: [string, ModelSpec][] = [
    ['headDim 2', { ...spec, headDim: 2 }],
    ['headDim 512, MHA', { ...spec, queryHeads: 2, kvHeads: 2, headDim: 512 }],
    ['MQA, 32 query heads over 1 kv head', { ...spec, queryHeads: 32, kvHeads: 1 }],
    ['1 layer, interleaved rope, theta 1e-300', { ...spec, layers: 1, rope: { theta: 1e-300, style: 'interleaved' } }],
    ['theta 1e12 with Llama-3 scaling at its ends', { ...spec, rope: { theta: 1e12, scaling: { factor: 1e6, lowFreqFactor: 1e-6, highFreqFactor: 1e6, originalMaxPositions: 1 } } }],
  ];
  for (const [label, s] of geometries) {
    it(`${label}: shadowkv at rank = key width and a budget past the row, and quest, match full; streaming and snapkv finite`, async () => {
      const width = s.kvHeads * s.headDim;
      const full = await runCase(env, s, 'full', {});
      for (const [policy, options] of [['shadowkv', { ...exact, rank: width }], ['quest', { chunkSize: 1, budget: 65536 }]] as const) {
        const r = await runCase(env, s, policy, options);
        r.outs.forEach((x, i) => expect(relError(x, full.outs[i]!), `${policy} output ${i}`).toBeLessThan(env.tolerance));
        await cropSaveLoad(r.cache, s);
        r.cache.dispose();
      }
      for (const [policy, options] of [['shadowkv', { ...tight, rank: 1, chunkSize: 1, budget: 1, outlierChunks: 0, localTokens: 0, maxRecentTokens: 1 }], ['streaming', { sinkTokens: 0, windowTokens: 1 }], ['snapkv', { budget: 2, windowTokens: 1, kernelSize: 1023 }]] as const) {
        const r = await runCase(env, s, policy, options);
        finite(r.outs, `${policy}`);
        await cropSaveLoad(r.cache, s);
        r.cache.dispose();
      }
      full.cache.dispose();
    });
  }

  it('maxTokens 1, and batch 4096 at maxTokens 8: every policy runs', async () => {
    const one = { ...spec, layers: 1 };
    for (const [policy, options] of [['full', {}], ['shadowkv', { ...tight, rank: 1, chunkSize: 1, budget: 1, localTokens: 0, maxRecentTokens: 1, denseThreshold: 1 }], ['streaming', { windowTokens: 1 }], ['quest', { chunkSize: 1024, budget: 1024 }], ['snapkv', { budget: 2, windowTokens: 1 }]] as const) {
      const r = await runCase(env, one, policy, options, { maxTokens: 1, S: 1, steps: 0 });
      finite(r.outs, `${policy} maxTokens 1`);
      r.cache.dispose();
    }
    const wide = await runCase(env, one, 'shadowkv', { ...tight, denseThreshold: 4 }, { batch: 4096, maxTokens: 8, S: 4, steps: 2 });
    finite(wide.outs, 'batch 4096');
    wide.cache.dispose();
  });
}, (e) => e.name === 'wasm-f32');
