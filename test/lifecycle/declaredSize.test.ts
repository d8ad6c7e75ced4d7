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

// ShadowKV's host pages differ with fp8 values, packed values add their bases, and the hot cache adds device slots.
const cases = [
  ...[150, 60].map((prompt) => ({ policy: 'shadowkv' as const, prompt, dtype: 'bf16' as const, opts: options, label: '' })),
  { policy: 'shadowkv' as const, prompt: 150, dtype: 'f32' as const, opts: options, label: ', f32' },
  { policy: 'shadowkv' as const, prompt: 150, dtype: 'bf16' as const, opts: { ...options, fp8Values: true }, label: ', fp8 values' },
  { policy: 'shadowkv' as const, prompt: 150, dtype: 'bf16' as const, opts: { ...options, packedValues: true }, label: ', packed values' },
  { policy: 'shadowkv' as const, prompt: 150, dtype: 'f16' as const, opts: { ...options, hotChunks: 8 }, label: ', f16, hot cache' },
  ...[150, 60].map((prompt) => ({ policy: 'full' as const, prompt, dtype: 'bf16' as const, opts: undefined, label: '' })),
  { policy: 'full' as const, prompt: 150, dtype: 'f32' as const, opts: undefined, label: ', f32' },
];
for (const { policy, prompt, dtype, opts, label } of cases) {
  it(`${policy}${label}, a ${prompt}-token prompt decoded up to maxTokens: no component past the estimate, no pinned page past the reserve`, async () => {
    const { name } = registerRecorded(registerPinningWasm());
    const cache: Cache = await createCache({ spec, backend: name, dtype, batch: 2, maxTokens, policy, ...(opts ? { options: opts } : {}) });
    const est = estimateMemory({ spec, tokens: maxTokens, maxTokens, batch: 2, dtype, policy, ...(opts ? { options: opts } : {}) });
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
