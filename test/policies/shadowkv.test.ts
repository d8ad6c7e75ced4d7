import { runPolicyConformance } from '../../packages/shadowkv/src/testing/index.js';

// Wide: rows stay dense below the threshold. Tight: compressed from 48 tokens, 16 tokens selected.
runPolicyConformance({
  name: 'shadowkv',
  wide: { denseThreshold: 100000 },
  tight: { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 },
});

import { expect, it } from 'vitest';
import { createCache, estimateMemory, toFloat32, ConfigError, type KVCachePolicy } from '../../packages/shadowkv/src/index.js';
import { KIT_SPEC, KitInputs } from '../../packages/shadowkv/src/testing/index.js';
import { forEachEnv } from '../envs.js';

forEachEnv('shadowkv: denseLayers', (env) => {
  const spec = { ...KIT_SPEC, layers: 3 };
  const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 };
  const S = 300;
  const prompt = Array.from({ length: spec.layers }, (_, l) => new KitInputs(40 + l).prompt(2, S));
  const steps = Array.from({ length: 4 }, (_, i) => Array.from({ length: spec.layers }, (_, l) => new KitInputs(60 + 10 * i + l).step(2)));
  const make = (policy: 'shadowkv' | 'full', denseLayers?: number) =>
    createCache({ spec, policy, batch: 2, dtype: env.dtype, backend: env.backend, maxTokens: S + 8, ...(policy === 'shadowkv' ? { options: { ...options, ...(denseLayers !== undefined ? { denseLayers } : {}) } } : {}) });
  /** Every step's output per layer. */
  const run = (c: KVCachePolicy) => {
    prompt.forEach((p, l) => c.prefill(l, p));
    return steps.map((perLayer) => perLayer.map((s, l) => Array.from(toFloat32(c.decode(l, s)))));
  };

  it('the first denseLayers layers decode as full does, the rest as with none; the host tier and estimateMemory shrink by those layers', async () => {
    const [mixed, sparse, full] = [await make('shadowkv', 2), await make('shadowkv', 0), await make('full')];
    const [m, s, f] = [run(mixed), run(sparse), run(full)];
    for (let i = 0; i < steps.length; i++) {
      for (const l of [0, 1]) expect(m[i]![l], `step ${i} layer ${l}`).toEqual(f[i]![l]);
      expect(m[i]![2], `step ${i} layer 2`).toEqual(s[i]![2]);
      expect(s[i]![0], 'layer 0 is sparse without denseLayers').not.toEqual(f[i]![0]);
    }
    // A step's attention over the layers: two dense layers read the whole row, the last one its selection.
    expect(mixed.stats().lastAttendedTokens).toBe(sparse.stats().lastAttendedTokens);
    expect(mixed.stats().stepAttendedTokens).toBeCloseTo((2 * full.stats().lastAttendedTokens + sparse.stats().lastAttendedTokens) / 3, 9);
    expect(full.stats().stepAttendedTokens).toBe(full.stats().lastAttendedTokens);
    // One sparse layer of three: a third of the host tier and of the compressed parts, here and in the estimate.
    expect(mixed.memory().host).toBe(sparse.memory().host / 3);
    expect(mixed.memory().components.lowRankU! * 3).toBe(sparse.memory().components.lowRankU);
    const estimate = (denseLayers: number) => estimateMemory({ spec, tokens: S, maxTokens: S + 8, batch: 2, dtype: env.dtype, options: { ...options, denseLayers } });
    const [e2, e0] = [estimate(2), estimate(0)];
    expect(e2.host * 3).toBe(e0.host);
    expect(e2.components.lowRankU! * 3).toBe(e0.components.lowRankU);
    expect(e2.components.exactTail! - e0.components.exactTail! / 3).toBe((2 / 3) * e2.dense); // two dense rows' worth, per row of the batch
    [mixed, sparse, full].forEach((c) => c.dispose());
  });

  it('every layer dense is full: the same outputs, nothing on the host tier, here or in the estimate', async () => {
    const [all, full] = [await make('shadowkv', spec.layers), await make('full')];
    expect(run(all)).toEqual(run(full));
    expect(all.memory().host).toBe(0);
    expect(all.stats().compressions).toBe(0);
    const e = estimateMemory({ spec, tokens: S, maxTokens: S + 8, batch: 2, dtype: env.dtype, options: { ...options, denseLayers: spec.layers } });
    expect([e.host, e.device]).toEqual([0, e.dense]);
    [all, full].forEach((c) => c.dispose());
  });

  it('denseLayers beyond the model or not an integer is a ConfigError naming it', async () => {
    for (const bad of [4, -1, 1.5]) await expect(make('shadowkv', bad)).rejects.toThrow(ConfigError);
    await expect(make('shadowkv', 4)).rejects.toThrow(/denseLayers must be an integer in \[0, layers = 3\], got 4/);
  });
});
