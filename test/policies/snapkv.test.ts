import { runPolicyConformance } from '../../packages/shadowkv/src/testing/index.js';

runPolicyConformance({ name: 'snapkv', wide: { budget: 1000, windowTokens: 8 }, tight: { budget: 64, windowTokens: 8, kernelSize: 5 }, evicts: true });

import { expect, it } from 'vitest';
import { createCache, loadCache, toFloat32, type KVCachePolicy, type Tensor } from '../../packages/shadowkv/src/index.js';
import { KIT_SPEC, KitInputs } from '../../packages/shadowkv/src/testing/index.js';
import { forEachEnv } from '../envs.js';

/** Tokens [from, to) of a [rows, heads, S, d] tensor. */
function tokens(t: Tensor, from: number, to: number): Tensor {
  const [rows, heads, S, d] = t.shape as [number, number, number, number];
  const data = new Float32Array(rows * heads * (to - from) * d);
  for (let r = 0; r < rows * heads; r++) data.set((t.data as Float32Array).subarray((r * S + from) * d, (r * S + to) * d), r * (to - from) * d);
  return { data, shape: [rows, heads, to - from, d], dtype: 'f32' };
}

forEachEnv('snapkv: the prompt is judged once it is in', (env) => {
  const options = { budget: 96, windowTokens: 8, kernelSize: 5 };
  const S = 400;
  const prompt = new KitInputs(11).prompt(2, S, true);
  const steps = Array.from({ length: 3 }, (_, i) => new KitInputs(20 + i).step(2));
  const make = () => createCache({ spec: { ...KIT_SPEC, layers: 1 }, policy: 'snapkv', batch: 2, dtype: env.dtype, backend: env.backend, options });
  const decode = (c: KVCachePolicy) => steps.map((s) => Array.from(toFloat32(c.decode(0, s))));

  for (const chunk of [128, 77]) {
    it(`a prompt prefilled in chunks of ${chunk}, queries with every chunk as a model loop passes them, keeps what one call keeps (no filler window votes)`, async () => {
      const whole = await make();
      whole.prefill(0, prompt);
      const chunked = await make();
      for (let t = 0; t < S; t += chunk) {
        const to = Math.min(S, t + chunk);
        chunked.prefill(0, { keys: tokens(prompt.keys, t, to), values: tokens(prompt.values, t, to), queries: tokens(prompt.queries!, t, to) });
      }
      // Nothing is evicted before the prompt is in: the chunks' attention saw every earlier token.
      expect(chunked.stats().policy).toEqual({ evictions: 0 });
      expect(decode(chunked)).toEqual(decode(whole));
      expect(chunked.stats().policy).toEqual({ evictions: 2 }); // one per row
      expect(chunked.stats().lastAttendedTokens).toBe(options.budget + steps.length);
      [whole, chunked].forEach((c) => c.dispose());
    });
  }

  it('a vote taken but not yet applied survives save() and loadCache()', async () => {
    const a = await make();
    a.prefill(0, prompt);
    const b = await loadCache(a.save(), { backend: env.backend });
    expect(decode(b)).toEqual(decode(a));
    expect(b.stats().policy).toEqual({ evictions: 2 });
    [a, b].forEach((c) => c.dispose());
  });
});
