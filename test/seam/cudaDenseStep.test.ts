import { expect, it } from 'vitest';
import { createCache, toFloat32, type Tensor } from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { forEachEnv } from '../envs.js';
import { registerComposed } from '../helpers/backends.js';

// A CUDA step whose rows are all dense (the full policy, or shadowkv rows not yet compressed) runs
// its attention as AttentionDense wherever a register kernel takes the shape (kernels/attention.h):
// the attention's blocks make their own tasks from the rows' records, rotate their query heads, and
// each task's last split appends the token's k and v to the tail that its last tile then reads,
// while StepAppend only counts the step. The same steps through the composed ops (a RoPE op, the
// tail writes, the attention op) and with SHADOWKV_CUDA_DENSE=0 (StepAppend's tasks) must give its
// bits: outputs, counters and the saved state, tails included. AttentionDense is taken where its
// kernel keeps as many resident blocks as the list kernel (its shared memory may cost one); under
// SHADOWKV_CUDA_DENSE=1 a step that cannot take it fails, which tells which path each case ran: on an
// H200 30 of the 33 (d 128 x 1 on f32 / f16 and d 64 x 8 on bf16 keep StepAppend's tasks; bench/NOTES.md
// v28), and Llama-3's shape (d 128, 4 a kv head) must take it on every dtype. Cases of the class:
// - every shape of the register kernels (d 64 / 128 / 256, 1-8 query heads a kv head);
// - a row of 8100 tokens, whose last split of 32 has 164+ keys (the first tiles are read before the
//   token is appended), and one of 120, whose last split is one tile holding the token (read after);
// - steps where a row sits out, and one step of queries past 1e30 (on bf16 the tensor-core kernel
//   then hands its task to the register routine, with its first tiles already in flight).
const shapes: [number, number][] = [[64, 1], [64, 2], [64, 4], [64, 8], [128, 1], [128, 2], [128, 4], [128, 8], [256, 1], [256, 2], [256, 4]];
const steps = 12;

forEachEnv('cuda: the dense step\'s attention', (env) => {
  it.each(shapes)('d %i, %i query heads a kv head: the composed ops\' and StepAppend\'s bits', async (d, g) => {
    const spec = { layers: 1, queryHeads: 2 * g, kvHeads: 2, headDim: d, rope: { theta: 10000 } };
    const prompts = [new NeedleWorkload(spec, { tokens: 8100, seed: 7 }).prompt(0, 1), new NeedleWorkload(spec, { tokens: 120, seed: 8 }).prompt(0, 1)];
    const work = new NeedleWorkload(spec, { tokens: 8100, seed: 9 });
    const inputs = Array.from({ length: steps }, (_, i) => {
      const sequences = i % 4 === 3 ? [1] : [0, 1];
      const input = work.step(0, sequences.length);
      // f16 cannot hold 1e31: the register kernels alone take its tasks anyway.
      if (i === 5 && env.dtype !== 'f16') (input.query.data as Float32Array).forEach((x, j, q) => (q[j] = x * 1e31));
      return { input, sequences };
    });
    const run = async (backend: string, denseEnv?: string) => {
      const cache = await createCache({ spec, batch: 2, dtype: env.dtype, backend, policy: 'full' });
      prompts.forEach((p, r) => cache.prefill(0, { ...p, sequences: [r] }));
      if (denseEnv) process.env.SHADOWKV_CUDA_DENSE = denseEnv;
      try {
        const outs = inputs.map(({ input, sequences }) => Array.from(toFloat32(cache.decode(0, input, { sequences }) as Tensor)));
        return { outs, stats: cache.stats(), state: Buffer.from(cache.save()).toString('base64') };
      } finally {
        delete process.env.SHADOWKV_CUDA_DENSE;
        cache.dispose();
      }
    };
    const fused = await run(env.backend);
    expect(fused.outs.flat().every(Number.isFinite)).toBe(true);
    // Counted as StepAppend counted: 12 steps; the last one row 1's alone (row 0 sat out), 120 + 12 tokens a kv head.
    expect([fused.stats.steps, fused.stats.lastAttendedTokens]).toEqual([steps, 120 + steps]);
    expect(await run(env.backend, '0')).toEqual(fused);
    expect(await run(registerComposed(env.backend))).toEqual(fused);
    const dense = await run(env.backend, '1').catch((e: unknown) => {
      if (/cudaErrorNotSupported/.test(String(e))) return undefined;
      throw e;
    });
    console.log(`dense-step ${env.name} d ${d} x ${g}: ${dense ? 'AttentionDense' : "StepAppend's tasks (its kernel would lose a resident block)"}`);
    if (d === 128 && g === 4) expect(dense).toBeDefined();
    if (dense) expect(dense).toEqual(fused);
  });
}, (e) => e.name.startsWith('cuda'));
