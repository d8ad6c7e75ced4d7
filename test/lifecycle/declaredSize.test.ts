import { expect, it } from 'vitest';
import { createCache, estimateMemory, type Cache } from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { hostAllocations, registerPinningWasm, registerRecorded } from '../helpers/backends.js';

// A declared maxTokens is the most a cache allocates: the creation preflight and the pinned reserve
// count what estimateMemory says for it, so no buffer may grow past that on the way there (a growth
// step of an eighth, or of 256 tail rows, used to overshoot it: +26 % of the full tail and +36 % of
// ShadowKV's host pages at this size, allocated in the middle of a decode step).
const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48, hostPageChunks: 4 };
const maxTokens = 203;

for (const policy of ['shadowkv', 'full'] as const) {
  for (const prompt of [150, 60]) {
    it(`${policy}, a ${prompt}-token prompt decoded up to maxTokens: no component past the estimate, no pinned page past the reserve`, async () => {
      const { name } = registerRecorded(registerPinningWasm());
      const cache: Cache = await createCache({ spec, backend: name, dtype: 'bf16', batch: 2, maxTokens, policy, ...(policy === 'shadowkv' ? { options } : {}) });
      const est = estimateMemory({ spec, tokens: maxTokens, maxTokens, batch: 2, dtype: 'bf16', policy, ...(policy === 'shadowkv' ? { options } : {}) });
      const work = new NeedleWorkload(spec, { tokens: prompt, seed: 3 });
      for (let l = 0; l < spec.layers; l++) cache.prefill(l, work.prompt(l, 2));
      hostAllocations.length = 0;
      for (let t = prompt; t < maxTokens; t++) for (let l = 0; l < spec.layers; l++) cache.decode(l, work.step(l, 2));
      const got = cache.memory();
      if (policy === 'shadowkv') expect(cache.stats().compactions).toBeGreaterThan(0);
      for (const [k, bytes] of Object.entries(est.components)) expect(got.components[k] ?? 0, k).toBeLessThanOrEqual(bytes);
      expect(got.host).toBeLessThanOrEqual(est.host);
      expect(hostAllocations).toEqual([]);
      // One token more is past maxTokens: refused, as the contract says, not grown into.
      expect(() => cache.decode(0, work.step(0, 2))).toThrow(/maxTokens|capacity/i);
      cache.dispose();
    });
  }
}

// The other built-in policies have no estimate of their own; their exact tail (the one growable
// buffer they share) stays within maxTokens rows, which the dense bound counts.
for (const policy of ['streaming', 'quest', 'snapkv'] as const) {
  it(`${policy}, decoded up to maxTokens: its exact tail within maxTokens rows`, async () => {
    const cache: Cache = await createCache({ spec, backend: 'wasm', dtype: 'bf16', batch: 2, maxTokens, policy });
    const work = new NeedleWorkload(spec, { tokens: 150, seed: 3 });
    for (let l = 0; l < spec.layers; l++) cache.prefill(l, work.prompt(l, 2));
    for (let t = 150; t < maxTokens; t++) for (let l = 0; l < spec.layers; l++) cache.decode(l, work.step(l, 2));
    const dense = estimateMemory({ spec, tokens: maxTokens, maxTokens, batch: 2, dtype: 'bf16', policy: 'full' }).dense;
    expect(cache.memory().components.exactTail).toBeGreaterThan(0);
    expect(cache.memory().components.exactTail).toBeLessThanOrEqual(dense);
    cache.dispose();
  });
}
