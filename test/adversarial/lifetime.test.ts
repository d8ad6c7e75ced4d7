// dispose() gives memory back even while the caller keeps the disposed cache referenced: the wasm
// heap goes with the cache, not with the last reference to it.
import { expect, it } from 'vitest';
import { createCache, FullKVCache, type Cache } from '../../packages/shadowkv/src/backend.js';
import { randn, rng } from '../helpers/data.js';
import { globalGc, rssMB, settledRssMB as settle } from '../../examples/workloads/memory.js';

const MB = 2 ** 20;

// 12800 tokens x 8 kv heads x 128 dims x 4 bytes x (K, V) = 100 MiB per cache.
const spec = { layers: 1, queryHeads: 8, kvHeads: 8, headDim: 128, rope: { theta: 10000 } };
const S = 12800;

it('20 caches of ~100 MB, kept referenced after dispose(), give their memory back', async () => {
  const gc = globalGc();
  const rand = rng(1);
  const n = spec.kvHeads * S * spec.headDim;
  const keys = { data: randn(n, rand, 1, new Float32Array(n)), shape: [1, spec.kvHeads, S, spec.headDim], dtype: 'f32' as const };
  const values = { data: randn(n, rand, 1, new Float32Array(n)), shape: keys.shape, dtype: 'f32' as const };
  // One cache made and disposed first, so that compiling the runtime is not counted.
  (await createCache({ spec, policy: 'full', dtype: 'f32', backend: 'wasm', maxTokens: 64 })).dispose();
  const baseline = await settle(gc);
  const caches: Cache[] = [];
  for (let i = 0; i < 20; i++) {
    // Half through createCache, half through the synchronous constructor.
    const cache = i % 2 ? await createCache({ spec, policy: 'full', dtype: 'f32', backend: 'wasm', maxTokens: S }) : new FullKVCache({ spec, dtype: 'f32', backend: 'wasm', maxTokens: S });
    cache.prefill(0, { keys, values });
    caches.push(cache);
  }
  const held = caches.reduce((a, c) => a + c.memory().device, 0) / MB;
  const peak = rssMB();
  for (const c of caches) c.dispose();
  const after = await settle(gc);
  console.log(`lifetime: RSS ${baseline.toFixed(0)} MB before, ${peak.toFixed(0)} MB with 20 caches (${held.toFixed(0)} MB held), ${after.toFixed(0)} MB after dispose() + gc, ${caches.length} disposed caches still referenced`);
  expect(held).toBeGreaterThan(1900); // the caches did hold ~100 MB each
  expect(after - baseline).toBeLessThan(300);
});
