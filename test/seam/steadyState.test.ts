import { describe, expect, it } from 'vitest';
import { createCache, type ShadowKVCache } from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { registerCountedWasm, type CallCounts } from '../helpers/backends.js';

// Instrumented decode: runtime calls and allocations per layer step, at batch 1 and 4, after the
// rows are compressed. Compaction runs inside the window (every ~32 steps per row).
const calls: CallCounts = new Map();
const backend = registerCountedWasm(calls);
const spec = { layers: 2, queryHeads: 8, kvHeads: 2, headDim: 32, rope: { theta: 10000 } };
const options = { budget: 64, rank: 24, chunkSize: 8, localTokens: 8, maxRecentTokens: 32, denseThreshold: 256 };

describe('steady-state decode (instrumented)', () => {
  it.each([1, 4])('batch %i: one runtime call per layer step and no allocation in 100 steps', async (batch) => {
    const work = new NeedleWorkload(spec, { tokens: 700, seed: 11 });
    const cache = (await createCache({ spec, batch, dtype: 'bf16', backend, options })) as ShadowKVCache;
    for (let l = 0; l < spec.layers; l++) cache.prefill(l, work.prompt(l, batch));
    const inputs = Array.from({ length: 170 }, () => Array.from({ length: spec.layers }, (_, l) => work.step(l, batch)));
    const out = new Float32Array(batch * spec.queryHeads * spec.headDim);
    const run = (steps: typeof inputs) => steps.forEach((perLayer) => perLayer.forEach((input, l) => cache.decode(l, input, { out })));
    // Warm-up: first compression, scratch sizing, and the store's first growth past its headroom.
    run(inputs.slice(0, 70));
    const device = (cache as unknown as { device: { allocations(): number } }).device;
    calls.clear();
    const allocationsBefore = device.allocations();
    const compactionsBefore = cache.stats().compactions;
    calls.clear(); // stats() reads the counters without a runtime call; cleared anyway
    run(inputs.slice(70, 170));
    const layerSteps = 100 * spec.layers;
    expect(Object.fromEntries(calls)).toEqual({ skv_decode_layer: layerSteps });
    expect(device.allocations() - allocationsBefore).toBe(0);
    expect(cache.stats().compactions - compactionsBefore).toBeGreaterThanOrEqual(2 * batch * spec.layers); // compaction was in the window
    cache.dispose();
  });

  it('growth of the compressed store is amortized: a few allocations over 400 steps of compaction', async () => {
    const work = new NeedleWorkload(spec, { tokens: 700, seed: 12 });
    const cache = (await createCache({ spec, batch: 1, dtype: 'bf16', backend, options })) as ShadowKVCache;
    for (let l = 0; l < spec.layers; l++) cache.prefill(l, work.prompt(l, 1));
    const out = new Float32Array(spec.queryHeads * spec.headDim);
    const device = (cache as unknown as { device: { allocations(): number } }).device;
    for (let l = 0; l < spec.layers; l++) cache.decode(l, work.step(l, 1), { out });
    const before = device.allocations();
    for (let t = 0; t < 400; t++) for (let l = 0; l < spec.layers; l++) cache.decode(l, work.step(l, 1), { out });
    const compactions = cache.stats().compactions;
    expect(compactions).toBeGreaterThanOrEqual(20);
    // Each growth reallocates U, landmarks and their ids (3) and may add host pages and a page table.
    expect(device.allocations() - before).toBeLessThanOrEqual(6 * Math.ceil(compactions / 8));
    cache.dispose();
  });
});
