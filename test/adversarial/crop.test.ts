// crop() forgets: after crop(seq, L) a row continues exactly as a row that was only ever given its
// first L tokens. What a policy derived from the cropped ones (a chunk's summary, a pending vote over
// the prompt) must go with them; a chunk the crop cut, completed by the next step's token, is summarized
// from its new rows (bench/NOTES.md v47: quest scored a cut chunk by its old summary).
import { describe, expect, it } from 'vitest';
import { createCache, loadCache, toFloat32, type Cache } from '../../packages/shadowkv/src/backend.js';
import { registerLandmarkWindow } from '../../examples/custom-policy/LandmarkWindowCache.js';
import { KitInputs } from '../../packages/shadowkv/src/testing/inputs.js';
import { forEachEnv } from '../envs.js';

registerLandmarkWindow();
const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const PROMPT = 200;

// recentTokens 0: every whole chunk competes, the one the crop cut included.
const POLICIES = {
  full: {},
  quest: { chunkSize: 8, budget: 32, recentTokens: 0 },
  'landmark-window': { chunkSize: 8, budget: 32, recentTokens: 0 },
  snapkv: { budget: 64, windowTokens: 8 },
  shadowkv: { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 },
} as const;

forEachEnv('crop() then steps equal a row given only the kept tokens', (env) => {
  for (const [policy, options] of Object.entries(POLICIES)) {
    // NOTE: 191 + the step's token = 24 chunks of 8: the step completes the chunk the crop cut.
    // NOTE: a prefill after the crop takes the row past the rows a dropped vote was taken over.
    for (const [length, more] of [[191, 0], [150, 0], [195, 20]] as const) {
      it(`${policy}, crop to ${length} of ${PROMPT} (a prompt with queries)${more ? `, then ${more} more tokens` : ''}`, async () => {
        const make = () => createCache({ spec, policy: policy as 'full', batch: 1, dtype: env.dtype, backend: env.backend, options: options as never }) as Promise<Cache>;
        const [cropped, kept] = [await make(), await make()];
        const prompt = new KitInputs(11, spec).prompt(1, PROMPT, true);
        const head = (t: { data: Float32Array | Uint16Array; shape: number[] }) => {
          const [r, h, , d] = t.shape as [number, number, number, number];
          const data = new Float32Array(r * h * length * d);
          for (let i = 0; i < h; i++) data.set((t.data as Float32Array).subarray(i * PROMPT * d, (i * PROMPT + length) * d), i * length * d);
          return { data, shape: [r, h, length, d], dtype: 'f32' as const };
        };
        for (let l = 0; l < spec.layers; l++) {
          cropped.prefill(l, prompt);
          // The row given only the kept tokens, and no queries: a vote over the whole prompt goes with the crop.
          kept.prefill(l, { keys: head(prompt.keys as never), values: head(prompt.values as never) });
        }
        cropped.crop(0, length);
        const steps = new KitInputs(12, spec);
        if (more) {
          for (let l = 0; l < spec.layers; l++) {
            const next = steps.prompt(1, more);
            expect(cropped.prefill(l, next)).toEqual(kept.prefill(l, next));
          }
        }
        for (let t = 0; t < 4; t++) {
          for (let l = 0; l < spec.layers; l++) {
            const input = steps.step(1);
            expect(Array.from(toFloat32(cropped.decode(l, input) as never)), `step ${t} layer ${l}`).toEqual(Array.from(toFloat32(kept.decode(l, input) as never)));
          }
        }
        [cropped, kept].forEach((c) => c.dispose());
      });
    }
  }
});

describe('crop() of what a policy no longer holds exactly', () => {
  it('is a CapacityError that leaves the row as it was', async () => {
    const cache = await createCache({ spec, policy: 'streaming', batch: 1, dtype: 'f32', backend: 'wasm', options: { sinkTokens: 4, windowTokens: 32 } as never });
    const inputs = new KitInputs(13, spec);
    for (let l = 0; l < spec.layers; l++) cache.prefill(l, inputs.prompt(1, 100));
    const before = cache.save();
    expect(() => cache.crop(0, 90)).toThrow(/only exact tokens can be cropped/);
    expect(Buffer.from(cache.save()).equals(Buffer.from(before))).toBe(true);
    cache.dispose();
  });
});

describe('crop() after a step of a chunk-scoring policy', () => {
  for (const policy of ['quest', 'landmark-window'] as const) {
    it(`${policy}: selection() lists only chunks the row still holds, and the cache's snapshot loads`, async () => {
      const cache = await createCache({ spec, policy: policy as 'quest', batch: 1, dtype: 'f32', backend: 'wasm', options: POLICIES[policy] });
      const inputs = new KitInputs(14, spec);
      for (let l = 0; l < spec.layers; l++) cache.prefill(l, inputs.prompt(1, PROMPT));
      for (let l = 0; l < spec.layers; l++) cache.decode(l, inputs.step(1));
      const before = (cache as unknown as { selection(l: number, s: number, h: number): number[] }).selection(0, 0, 0);
      expect(before.some((c) => c >= 5)).toBe(true);
      cache.crop(0, 40);
      const after = (cache as unknown as { selection(l: number, s: number, h: number): number[] }).selection(0, 0, 0);
      expect(after).toEqual(before.filter((c) => c < 5));
      const restored = await loadCache(cache.save(), { backend: 'wasm' });
      const step = inputs.step(1);
      for (let l = 0; l < spec.layers; l++) expect(Array.from(toFloat32(restored.decode(l, step) as never))).toEqual(Array.from(toFloat32(cache.decode(l, step) as never)));
      [cache, restored].forEach((c) => c.dispose());
    });
  }
});
