import { expect, it } from 'vitest';
import { createCache, toFloat32, type ShadowKVCache } from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { forEachEnv } from '../envs.js';

// The fused CUDA step's landmark logits in every grouping of their ranges (512 landmarks each): a
// logits block may take several ranges through one pipeline, which the cost model picks from about
// 4 rows x 128K; the small suites only ever see one range per block. Selections, outputs and
// counters must not depend on the grouping: each (split) is forced through SHADOWKV_CUDA_LOGIT_SPLIT,
// which a CUDA device reads when it is made.
const options = { budget: 128, rank: 32, chunkSize: 8, localTokens: 16, maxRecentTokens: 32, denseThreshold: 256 };
const [tokens, batch, steps] = [12288, 2, 12]; // ~1536 chunks a row: 3 or more logit ranges per kv head

forEachEnv('cuda: landmark logit ranges grouped per block', (env) => {
  // d 64 and 128: the two widths whose bf16 logits run on the tensor cores (others take the register path).
  it.each([64, 128])('d %i: selections, outputs and counters are the same bits with all ranges in one block, two blocks, and one range a block', async (headDim) => {
    const spec = { layers: 1, queryHeads: 8, kvHeads: 2, headDim, rope: { theta: 10000 } };
    const work = new NeedleWorkload(spec, { tokens, seed: 5 });
    const prompt = work.prompt(0, batch);
    const inputs = Array.from({ length: steps }, () => work.step(0, batch));
    const run = async (split: string) => {
      process.env.SHADOWKV_CUDA_LOGIT_SPLIT = split;
      const cache = (await createCache({ spec, batch, dtype: env.dtype, backend: env.backend, options })) as ShadowKVCache;
      delete process.env.SHADOWKV_CUDA_LOGIT_SPLIT;
      cache.prefill(0, prompt);
      const outs = inputs.map((x) => Array.from(toFloat32(cache.decode(0, x))));
      const sel = Array.from({ length: batch }, (_, r) => Array.from({ length: spec.kvHeads }, (_, h) => cache.selection(0, r, h)));
      const stats = cache.stats();
      cache.dispose();
      return { outs, sel, stats };
    };
    // 64: past the range count, so one range a block.
    const [one, two, each] = [await run('1'), await run('2'), await run('64')];
    expect(each.sel.flat(2).length).toBe(batch * spec.kvHeads * (options.budget / options.chunkSize));
    for (const other of [one, two]) {
      expect(other.sel).toEqual(each.sel);
      expect(other.outs).toEqual(each.outs);
      expect(other.stats).toEqual(each.stats);
    }
  });
}, (e) => e.name.startsWith('cuda'));
