import { expect, it } from 'vitest';
import { createCache, toFloat32, type ShadowKVCache } from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { forEachEnv } from '../envs.js';
import { registerComposed } from '../helpers/backends.js';

// The fused CUDA step's work split in each of its groupings, which a CUDA device reads from the
// environment when it is made (the small suites only ever see the defaults):
// - SHADOWKV_CUDA_LOGIT_SPLIT: logit blocks per kv head. A block may take several landmark ranges
//   (512 landmarks each) through one pipeline, which the cost model picks from about 4 rows x 128K.
//   The first logits launch also appends the rows and rotates its own queries unless the addon's
//   per-step SHADOWKV_CUDA_APPEND_FOLD=0 keeps the append a kernel of its own.
// - SHADOWKV_CUDA_SELECT_BLOCKS: blocks per kv head that score and select. 1 is the path of devices
//   without thread block clusters (softmax sums, scores, then one selecting block); 2-16 a cluster
//   (past 8 where the device takes non-portable sizes, else 8) whose blocks each take a slice of the landmarks, copied to their shared memory first unless the
//   addon's per-step SHADOWKV_CUDA_SELECT_NEAR=0 leaves it in global memory.
// - SHADOWKV_CUDA_STEP_GROUPS: row groups whose work overlaps the previous group's value reads (a
//   second stream), 3 of them uneven here. The fetch is split (values on the second stream, keys on
//   the step's) unless SHADOWKV_CUDA_FETCH_SPLIT=0 keeps it whole with one group; with
//   SHADOWKV_CUDA_FETCH_GRID=1 one block reads every miss group's values, item after item. These
//   two the addon reads at every step.
// Selections, outputs and counters must not depend on the grouping.
const options = { budget: 128, rank: 32, chunkSize: 8, localTokens: 16, maxRecentTokens: 32, denseThreshold: 256 };
const [tokens, batch, steps] = [12288, 3, 12]; // ~1536 chunks a row: 3 or more logit ranges per kv head

// The split fetch's value reads also serve the hot-value cache and fp8 host values: the groups run
// again with both (a variant of their own).
const levers = { fp8Values: true, hotChunks: 64 };
const groupings: [string, string[], object?][] = [
  ['SHADOWKV_CUDA_LOGIT_SPLIT', ['64', '1', '2', '2 SHADOWKV_CUDA_APPEND_FOLD=0']], // 64: past the range count, so one range a block
  ['SHADOWKV_CUDA_SELECT_BLOCKS', ['1', '2', '3', '6', '8', '16', '2 SHADOWKV_CUDA_SELECT_NEAR=0', '16 SHADOWKV_CUDA_SELECT_NEAR=0']],
  ['SHADOWKV_CUDA_STEP_GROUPS', ['1 SHADOWKV_CUDA_FETCH_SPLIT=0', '1', '2', '3', '3 SHADOWKV_CUDA_FETCH_GRID=1',
    '1 SHADOWKV_CUDA_FETCH_GRID=1', '3 SHADOWKV_CUDA_APPEND_FOLD=0']], // then the addon's per-step settings
  ['SHADOWKV_CUDA_STEP_GROUPS', ['1 SHADOWKV_CUDA_FETCH_SPLIT=0', '1', '3', '3 SHADOWKV_CUDA_FETCH_GRID=1'], levers],
];

forEachEnv('cuda: the fused step in every grouping of its work', (env) => {
  // d 64 and 128: the two widths whose bf16 logits run on the tensor cores (others take the register path).
  it.each(groupings.flatMap(([name, values, extra]) => [64, 128].map((d) => [name, d, values, extra ?? {}] as const)))(
    '%s, d %i, options %o: selections, outputs and counters are the same bits in each grouping',
    async (name, headDim, values, extra) => {
      const spec = { layers: 1, queryHeads: 8, kvHeads: 2, headDim, rope: { theta: 10000 } };
      const work = new NeedleWorkload(spec, { tokens, seed: 5 });
      const prompt = work.prompt(0, batch);
      const inputs = Array.from({ length: steps }, () => work.step(0, batch));
      const run = async (setting: string) => {
        const [value, ...perStep] = setting.split(' ').map((x) => x.split('='));
        process.env[name] = value![0];
        const cache = (await createCache({ spec, batch, dtype: env.dtype, backend: env.backend, options: { ...options, ...extra } })) as ShadowKVCache;
        delete process.env[name];
        for (const [k, v] of perStep) process.env[k!] = v;
        cache.prefill(0, prompt);
        const outs = inputs.map((x) => Array.from(toFloat32(cache.decode(0, x))));
        for (const [k] of perStep) delete process.env[k!];
        const sel = Array.from({ length: batch }, (_, r) => Array.from({ length: spec.kvHeads }, (_, h) => cache.selection(0, r, h)));
        const stats = cache.stats();
        cache.dispose();
        return { outs, sel, stats };
      };
      const runs = [];
      for (const value of values) runs.push(await run(value)); // one at a time: each reads the environment
      const [first, ...others] = runs;
      expect(first.sel.flat(2).length).toBe(batch * spec.kvHeads * (options.budget / options.chunkSize));
      for (const other of others) {
        expect(other.sel).toEqual(first.sel);
        expect(other.outs).toEqual(first.outs);
        expect(other.stats).toEqual(first.stats);
      }
    },
  );

  // A launch's shared memory is its static part plus the dynamic bytes, and the dynamic ones need
  // an opt-in past 48 KB less the static part (kernels/common.cuh skv_smem_optin). With 1024 chunks
  // selected and ~6K landmarks a kv head, the one-block select takes ~44 KB of lists and scores
  // beside its ~9 KB, and clusters of 2 ~33 KB beside their ~19 KB: both launches failed
  // (cudaErrorInvalidValue) while the opt-in looked at the dynamic bytes alone.
  it.each(['1', '2'])('SHADOWKV_CUDA_SELECT_BLOCKS %s past 48 KB with its static shared memory: the default plan\'s bits', async (blocks) => {
    const spec = { layers: 1, queryHeads: 8, kvHeads: 2, headDim: 128, rope: { theta: 10000 } };
    const work = new NeedleWorkload(spec, { tokens: 48000, seed: 3 });
    const prompt = work.prompt(0, 1);
    const inputs = Array.from({ length: 3 }, () => work.step(0, 1));
    const wide = { ...options, budget: 8192 };
    const run = async (setting?: string) => {
      if (setting) process.env.SHADOWKV_CUDA_SELECT_BLOCKS = setting;
      const cache = (await createCache({ spec, batch: 1, dtype: env.dtype, backend: env.backend, options: wide })) as ShadowKVCache;
      delete process.env.SHADOWKV_CUDA_SELECT_BLOCKS;
      cache.prefill(0, prompt);
      const outs = inputs.map((x) => Array.from(toFloat32(cache.decode(0, x))));
      const sel = Array.from({ length: spec.kvHeads }, (_, h) => cache.selection(0, 0, h));
      cache.dispose();
      return { outs, sel };
    };
    const base = await run();
    expect(base.sel.flat().length).toBe(spec.kvHeads * (wide.budget / wide.chunkSize));
    expect(await run(blocks)).toEqual(base);
  });

  // A decode step compacts its row's whole recent region at once, and maxRecentTokens may be 2^20:
  // the compaction kernels' grids then pass the 65535 blocks a grid's y may have. 70000 recent
  // tokens, filled by a continuation prefill to one short of compacting, so that the next step
  // compacts them all in the fused step; the composed ops must give its bits.
  it('a step that compacts 70000 tokens at once: the composed ops\' bits', async () => {
    const spec = { layers: 1, queryHeads: 4, kvHeads: 1, headDim: 64, rope: { theta: 10000 } };
    const recent = 70000, first = 4000; // the first step compresses all but localTokens (4000 - 16 is whole chunks)
    const opts = { ...options, maxRecentTokens: recent };
    const work = new NeedleWorkload(spec, { tokens: first + recent - 1, seed: 11 });
    const { keys, values } = work.prompt(0, 1);
    const part = (t: typeof keys, from: number, to: number) => ({ data: (t.data as Float32Array).slice(from * 64, to * 64), shape: [1, 1, to - from, 64], dtype: 'f32' as const });
    const head = { keys: part(keys, 0, first), values: part(values, 0, first) };
    const rest = { keys: part(keys, first, first + recent - 1), values: part(values, first, first + recent - 1) };
    const inputs = Array.from({ length: 3 }, () => work.step(0, 1));
    const run = async (backend: string) => {
      const cache = (await createCache({ spec, batch: 1, dtype: env.dtype, backend, options: opts })) as ShadowKVCache;
      cache.prefill(0, head);
      const outs = [Array.from(toFloat32(cache.decode(0, inputs[0]!)))];
      cache.prefill(0, rest); // the tail: localTokens + recent, not past it
      const compactions = [cache.stats().compactions];
      const attended: number[] = [];
      for (const x of inputs.slice(1)) {
        outs.push(Array.from(toFloat32(cache.decode(0, x))));
        compactions.push(cache.stats().compactions);
        attended.push(cache.stats().lastAttendedTokens);
      }
      const sel = cache.selection(0, 0, 0);
      cache.dispose();
      return { outs, sel, compactions, attended };
    };
    const fused = await run(env.backend);
    expect(fused.outs.flat().every(Number.isFinite)).toBe(true);
    // The first step after the prefill attends the whole tail, then compacts it; the next, a short tail.
    expect(fused.compactions).toEqual([0, 1, 1]);
    expect(fused.attended[0]).toBeGreaterThan(recent);
    expect(fused.attended[1]).toBeLessThan(recent / 2);
    expect(await run(registerComposed(env.backend))).toEqual(fused);
  });

  // The attention splits each task's keys by how many tasks share the step (one wave of blocks on the
  // card, kernels/attention.h): 16 rows x 8 kv heads of 4K tokens take fewer splits each than one
  // task alone would. The composed ops, told the step's task count, must split them alike.
  it('dense rows of a many-task step: the composed ops give the fused step\'s bits', async () => {
    const spec = { layers: 1, queryHeads: 32, kvHeads: 8, headDim: 128, rope: { theta: 500000 } };
    const rows = 16;
    const work = new NeedleWorkload(spec, { tokens: 4096, seed: 9 });
    const prompt = work.prompt(0, rows);
    const inputs = Array.from({ length: 3 }, () => work.step(0, rows));
    const run = async (backend: string) => {
      const cache = await createCache({ spec, batch: rows, dtype: env.dtype, backend, policy: 'full' });
      cache.prefill(0, prompt);
      const outs = inputs.map((x) => Array.from(toFloat32(cache.decode(0, x))));
      cache.dispose();
      return outs;
    };
    const fused = await run(env.backend);
    expect(fused.flat().every(Number.isFinite)).toBe(true);
    expect(await run(registerComposed(env.backend))).toEqual(fused);
  });
}, (e) => e.name.startsWith('cuda'));
