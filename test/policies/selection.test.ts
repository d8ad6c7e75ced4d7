import { expect, it } from 'vitest';
import { CapacityError, createCache, toFloat32, type QuestCache, type Tensor } from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { cosineSim } from '../helpers/data.js';
import { forEachEnv } from '../envs.js';

// What is special to each built-in beyond the kit: what it keeps and attends on a planted needle.
const spec = { layers: 1, queryHeads: 8, kvHeads: 2, headDim: 64, rope: { theta: 500000 } };
const W = 16; // question tokens

/** A 2000-token context, then a question whose queries look for the needle (one prefill input). */
function needleInputs(work: NeedleWorkload): { context: { keys: Tensor; values: Tensor }; question: { keys: Tensor; values: Tensor; queries: Tensor } } {
  const steps = Array.from({ length: W }, () => work.step(0));
  const join = (pick: (s: (typeof steps)[0]) => Tensor, H: number): Tensor => {
    const data = new Float32Array(H * W * 64);
    steps.forEach((s, t) => { for (let h = 0; h < H; h++) data.set((pick(s).data as Float32Array).subarray(h * 64, (h + 1) * 64), (h * W + t) * 64); });
    return { data, shape: [1, H, W, 64], dtype: 'f32' };
  };
  return { context: work.prompt(0), question: { keys: join((s) => s.key, 2), values: join((s) => s.value, 2), queries: join((s) => s.query, 8) } };
}

forEachEnv('policies on a planted needle', (env) => {
  const make = (policy: string, options: object) => createCache({ spec, policy, dtype: env.dtype, backend: env.backend, options } as never);

  it('quest and snapkv find the needle within a 128-token budget and agree with full; streaming keeps only sinks + window and cannot', async () => {
    const work = new NeedleWorkload(spec, { tokens: 2000, depth: 0.4, seed: 3 });
    const { context, question } = needleInputs(work);
    const caches = {
      full: await make('full', {}),
      quest: await make('quest', { budget: 112, chunkSize: 16 }),
      snapkv: await make('snapkv', { budget: 128, windowTokens: W }),
      streaming: await make('streaming', { sinkTokens: 4, windowTokens: 124 }),
    };
    for (const c of Object.values(caches)) {
      c.prefill(0, context);
      c.prefill(0, question);
    }
    const cos = { quest: 1, snapkv: 1, streaming: 1 };
    for (let t = 0; t < 4; t++) {
      const input = work.step(0);
      const ref = toFloat32(caches.full.decode(0, input));
      for (const k of ['quest', 'snapkv', 'streaming'] as const) cos[k] = Math.min(cos[k], cosineSim(toFloat32(caches[k].decode(0, input)), ref));
      for (let h = 0; h < 2; h++) expect((caches.quest as unknown as QuestCache).selection(0, 0, h)).toContain(work.needleChunk(16));
    }
    expect(cos.quest).toBeGreaterThan(0.99);
    expect(cos.snapkv).toBeGreaterThan(0.99);
    expect(cos.streaming).toBeLessThan(0.5);
    expect(caches.streaming.stats().lastAttendedTokens).toBe(128);
    expect(caches.snapkv.stats().lastAttendedTokens).toBe(128 + 4);
    expect(caches.snapkv.stats().policy).toEqual({ evictions: 1 });
    // Evicted tokens cannot come back: cropping before the last eviction is refused, and changes nothing.
    expect(() => caches.streaming.crop(0, 1000)).toThrow(CapacityError);
    expect(caches.streaming.length(0)).toBe(2000 + W + 4);
    Object.values(caches).forEach((c) => c.dispose());
  });
}, (e) => e.dtype !== 'f16');
