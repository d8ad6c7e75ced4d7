import { expect, it } from 'vitest';
import { createCache, type Tensor } from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { forEachEnv } from '../envs.js';
import { cosineSim, f64, relError } from '../helpers/data.js';

// A prompt whose key subspace shifts half-way: tokens [0, 4000) come from one key model, [4000, 8000)
// from another, with the needle the queries look for in the second half. Prefilled in one call or
// in four, the cache must factor the whole prompt (at the first decode step) and agree with full.
const spec = { layers: 1, queryHeads: 8, kvHeads: 2, headDim: 64, rope: { theta: 10000 } };
const options = { budget: 256, rank: 32, denseThreshold: 2048 };
const S = 8000;

/** Tokens [from, to) of a `[1, H, S, d]` tensor. */
function tokens(t: Tensor, from: number, to: number): Tensor {
  const [, H, n, d] = t.shape as [number, number, number, number];
  const out = new Float32Array(H * (to - from) * d);
  for (let h = 0; h < H; h++) out.set((t.data as Float32Array).subarray((h * n + from) * d, (h * n + to) * d), h * (to - from) * d);
  return { data: out, shape: [1, H, to - from, d], dtype: t.dtype };
}

/** The shifted prompt: keys of the first half from `a`, everything else from `b`. */
function shiftedPrompt(a: NeedleWorkload, b: NeedleWorkload): { keys: Tensor; values: Tensor } {
  const first = a.prompt(0).keys;
  const second = b.prompt(0);
  const keys = second.keys.data.slice() as Float32Array;
  const d = spec.headDim;
  for (let h = 0; h < spec.kvHeads; h++) keys.set((first.data as Float32Array).subarray(h * S * d, (h * S + S / 2) * d), h * S * d);
  return { keys: { ...second.keys, data: keys }, values: second.values };
}

forEachEnv('chunked prefill', (env) => {
  it('a prompt whose key subspace shifts mid-way gives the same cache in 1 or 4 prefill calls, within cosine 0.99 of full', async () => {
    // Focus 12: queries hold most of their attention on the needle, as a retrieval head's do.
    const b = new NeedleWorkload(spec, { tokens: S, depth: 0.75, seed: 2, keyRank: 12, focus: 12 });
    const prompt = shiftedPrompt(new NeedleWorkload(spec, { tokens: S, seed: 1, keyRank: 12 }), b); // 2 x 12 dims: rank 32 holds both
    const at = { dtype: env.dtype, backend: env.backend };
    const make = () => createCache({ spec, ...at, policy: 'shadowkv', options });
    const [one, four, early] = await Promise.all([make(), make(), make()]);
    const full = await createCache({ spec, ...at, policy: 'full' });
    one.prefill(0, prompt);
    full.prefill(0, prompt);
    for (let c = 0; c < 4; c++) {
      const part = { keys: tokens(prompt.keys, c * 2000, (c + 1) * 2000), values: tokens(prompt.values, c * 2000, (c + 1) * 2000) };
      four.prefill(0, part);
      early.prefill(0, part);
      // What the basis fitted when the threshold was first crossed did: compress before the prompt is in.
      if (c === 1) expect(early.compress()).toBe(1);
    }
    let worst = { one: 1, four: 1, early: 1 };
    let worstError = 0;
    for (let t = 0; t < 8; t++) {
      const input = b.step(0);
      const want = f64(full.decode(0, input));
      const got = { one: one.decode(0, input), four: four.decode(0, input), early: early.decode(0, input) };
      expect(Array.from(got.four.data)).toEqual(Array.from(got.one.data)); // the same cache, bit for bit
      worst = { one: Math.min(worst.one, cosineSim(f64(got.one), want)), four: Math.min(worst.four, cosineSim(f64(got.four), want)), early: Math.min(worst.early, cosineSim(f64(got.early), want)) };
      worstError = Math.max(worstError, relError(f64(got.four), want));
    }
    expect(Buffer.from(four.save()).equals(Buffer.from(one.save()))).toBe(true);
    expect(worst.one).toBeGreaterThanOrEqual(0.99);
    expect(worst.four).toBeGreaterThanOrEqual(0.99);
    expect(worstError).toBeLessThan(0.15);
    expect(worst.early).toBeLessThan(0.9); // the test has teeth: a half-prompt basis loses the needle
    for (const c of [one, four, early, full]) c.dispose();
  });
}, (e) => e.dtype !== 'f16');
