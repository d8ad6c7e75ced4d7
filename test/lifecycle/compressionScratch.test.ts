import { expect, it } from 'vitest';
import { createCache } from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { forEachEnv } from '../envs.js';

// A compression fills scratch buffers (keepLandmarks' outlier lists, the selections) that the
// device keeps for its next compression. Whatever an earlier compression
// left in them, the next one's store is its own: rows of different lengths compressed longest first
// and shortest first decode the same, bit for bit.
const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48, hostPageChunks: 4 };
const lengths = [300, 120, 200];

forEachEnv('compressions reuse their scratch', (env) => {
  it('rows of 300, 120 and 200 tokens compressed in two orders decode the same, bit for bit', async () => {
    const decodeAfter = async (order: number[]) => {
      const cache = await createCache({ spec, backend: env.backend, dtype: env.dtype, batch: lengths.length, options });
      try {
        const work = lengths.map((tokens, b) => new NeedleWorkload(spec, { tokens, seed: 3 + b }));
        work.forEach((w, b) => cache.prefill(0, { ...w.prompt(0), sequences: [b] }));
        order.forEach((b) => expect(cache.compress({ sequences: [b] })).toBe(1));
        expect(cache.stats().compressions).toBe(lengths.length);
        const outs: number[][] = [];
        for (let t = 0; t < 6; t++) work.forEach((w, b) => outs.push(Array.from(cache.decode(0, w.step(0), { sequences: [b] }).data as Float32Array)));
        return outs;
      } finally {
        cache.dispose();
      }
    };
    const longestFirst = await decodeAfter([0, 2, 1]);
    const shortestFirst = await decodeAfter([1, 2, 0]);
    expect(longestFirst.length).toBe(6 * lengths.length);
    longestFirst.forEach((out, i) => expect(out, `output ${i}`).toEqual(shortestFirst[i]));
  });
});
