// Fidelity of ShadowKV against full attention as attention gets more diffuse (needle focus) and
// the budget changes. Run: npx tsx bench/fidelitySweep.ts  (wasm, f32 storage, ~1 minute)
import { createCache, type ShadowKVCache } from '../packages/shadowkv/src/backend.js';
import { cosine } from '../examples/workloads/metrics.js';
import { NeedleWorkload } from '../examples/workloads/needle.js';
import { cli } from '../examples/cli.js';

cli('bench/fidelitySweep', 'ShadowKV against full attention as attention gets more diffuse and the budget changes', {});

const spec = { layers: 1, queryHeads: 16, kvHeads: 4, headDim: 64, rope: { theta: 500000 } };
console.log('tokens 6001, Hq 16, Hkv 4, d 64, key rank 24 + noise 0.05, rank 48, 10 decode steps');
console.log('focus  budget  worst-step cosine  hit rate');
for (const focus of [3, 4, 5, 6, 8]) {
  for (const budget of [256, 512]) {
    const work = new NeedleWorkload(spec, { tokens: 6001, keyRank: 24, noise: 0.05, seed: 5, focus });
    const opts = { spec, dtype: 'f32' as const, backend: 'wasm' };
    const shadow = (await createCache({ ...opts, policy: 'shadowkv', options: { budget, rank: 48, denseThreshold: 1024 } })) as unknown as ShadowKVCache;
    const full = await createCache({ ...opts, policy: 'full' });
    const prompt = work.prompt(0);
    shadow.prefill(0, prompt);
    full.prefill(0, prompt);
    let worst = 1;
    for (let t = 0; t < 10; t++) {
      const step = work.step(0);
      worst = Math.min(worst, cosine(shadow.decode(0, step).data, full.decode(0, step).data));
    }
    console.log(`${String(focus).padStart(5)}  ${String(budget).padStart(6)}  ${worst.toFixed(4).padStart(17)}  ${shadow.stats().hitRate.toFixed(2).padStart(8)}`);
    shadow.dispose();
    full.dispose();
  }
}
