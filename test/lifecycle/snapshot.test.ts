import { expect, it } from 'vitest';
import { createCache, loadCache, type Cache } from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { forEachEnv } from '../envs.js';

const spec = { layers: 2, queryHeads: 8, kvHeads: 2, headDim: 32, rope: { theta: 10000 } };
const options = { budget: 64, rank: 24, chunkSize: 8, localTokens: 16, maxRecentTokens: 16, denseThreshold: 256 };

async function filled(env: { dtype: 'f32' | 'f16' | 'bf16'; backend: string }, policy: string, work: NeedleWorkload): Promise<Cache> {
  const cache = await createCache({ spec, policy, batch: 2, dtype: env.dtype, backend: env.backend, options: policy === 'shadowkv' ? options : {} });
  for (let l = 0; l < spec.layers; l++) {
    const { keys, values } = work.prompt(l, 2);
    cache.prefill(l, { keys, values });
  }
  // Row 1 is reset and refilled short (dense), so the snapshot holds both kinds of rows.
  cache.reset(1);
  for (let l = 0; l < spec.layers; l++) {
    const { keys, values } = new NeedleWorkload(spec, { tokens: 40, seed: 3 }).prompt(l, 1);
    cache.prefill(l, { keys, values, sequences: [1] });
  }
  for (let t = 0; t < 30; t++) for (let l = 0; l < spec.layers; l++) cache.decode(l, work.step(l, 2)); // past compaction
  return cache;
}

forEachEnv('snapshots', (env) => {
  it.each(['shadowkv', 'full'])('%s: save → load continues exactly like the original', async (policy) => {
    const original = await filled(env, policy, new NeedleWorkload(spec, { tokens: 700, seed: 8 }));
    const bytes = original.save();
    const restored = await loadCache(bytes, { backend: env.backend });
    expect(restored.name).toBe(policy);
    expect([restored.length(0), restored.length(1)]).toEqual([original.length(0), original.length(1)]);
    expect(restored.memory().dense).toBe(original.memory().dense);
    if (policy === 'shadowkv') expect(restored.stats().compactions).toBe(original.stats().compactions);
    // Same inputs from here on give the same outputs and reuse, bit for bit.
    const work = new NeedleWorkload(spec, { tokens: 700, seed: 99 });
    for (let t = 0; t < 5; t++) {
      for (let l = 0; l < spec.layers; l++) {
        const input = work.step(l, 2);
        expect(Array.from(restored.decode(l, input).data)).toEqual(Array.from(original.decode(l, input).data));
        expect(restored.stats().lastHits).toBe(original.stats().lastHits);
      }
    }
    // A snapshot of the restored cache holds the same state.
    expect(restored.save().length).toBe(original.save().length);
    original.dispose();
    restored.dispose();
  });
}, (e) => e.dtype !== 'f16');
