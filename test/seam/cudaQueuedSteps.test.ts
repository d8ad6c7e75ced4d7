import { describe, expect, it } from 'vitest';
import { at, createCache, resolveBackend, type BaseKVCache, type DeviceTensor } from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { ENVS } from '../envs.js';

// A decode step's rows and host-array inputs go up on a stream of their own, into one of two
// device blocks used in turn, while earlier steps' kernels still wait on the op stream. Here the
// steps queue behind a long kernel, so every upload lands before the kernels that read the block
// before it have run, unless the upload waits for them: a step that read another step's rows or
// q | k | v would give other outputs than the same steps each read back before the next.
// Head dim 32 takes the tile kernel after StepAppend; head dim 128 with the full policy takes
// AttentionDense, whose blocks read the rows and queries themselves (kernels/attention.h).
// NOTE: scripts/gpu/run-tests.sh runs this file again with SHADOWKV_CUDA_SYNC=0: with 1 (its
// default) every op waits for the GPU, so nothing queues.
const cuda = ENVS.ready.find((e) => e.backend === 'cuda');
const shape = { layers: 2, queryHeads: 8, kvHeads: 2, rope: { theta: 10000 } };
const options = { budget: 64, rank: 24, chunkSize: 8, localTokens: 8, maxRecentTokens: 32, denseThreshold: 256 };
const batch = 3;
const steps = 12;

/** A causal attention over 16384 tokens on a device of its own (milliseconds of GPU time), queued and not waited for. */
async function queueLongKernel(): Promise<() => void> {
  const { backend } = await resolveBackend('cuda');
  const device = backend.createDevice();
  const [g, S, d] = [8, 16384, 128];
  const q = device.alloc(g * S * d, 'f32', 'blocker');
  const kv = device.alloc(S * d, 'bf16', 'blocker');
  const out = device.alloc(g * S * d, 'f32', 'blocker');
  device.causalAttention(at(q), g, S, d, 1 / Math.sqrt(d), 0, at(kv), at(kv), at(out));
  return () => device.dispose();
}

const suite = cuda ? describe : describe.skip;
suite(`decode steps queued on the GPU [cuda]${cuda ? '' : ' skipped: no CUDA device'}`, () => {
  it.each([['shadowkv', 32], ['full', 32], ['full', 128]] as const)('%s, head dim %i: 12 steps x 2 layers queued behind a long kernel equal the same steps each read back', async (policy, headDim) => {
    const spec = { ...shape, headDim };
    const work = new NeedleWorkload(spec, { tokens: 700, seed: 5 });
    const inputs = Array.from({ length: steps }, () => Array.from({ length: spec.layers }, (_, l) => work.step(l, batch)));
    // Prefilled, and one step taken and read back: compression and the workspaces' sizing wait for
    // the GPU, which would drain the queue.
    const make = async () => {
      const cache = (await createCache({ spec, batch, dtype: 'bf16', backend: 'cuda', policy, ...(policy === 'shadowkv' ? { options } : {}) })) as BaseKVCache;
      const prompt = new NeedleWorkload(spec, { tokens: 700, seed: 5 });
      for (let l = 0; l < spec.layers; l++) cache.prefill(l, prompt.prompt(l, batch));
      for (let l = 0; l < spec.layers; l++) cache.decode(l, prompt.step(l, batch));
      return cache;
    };
    const reference = await make();
    const expected = inputs.map((perLayer) => perLayer.map((input, l) => Float32Array.from(reference.decode(l, input).data)));
    reference.dispose();

    const cache = await make();
    const outs: DeviceTensor[][] = inputs.map(() => Array.from({ length: spec.layers }, () => cache.allocTensor([batch, spec.queryHeads, 1, spec.headDim], 'f32')));
    const release = await queueLongKernel();
    inputs.forEach((perLayer, i) => perLayer.forEach((input, l) => cache.decode(l, input, { out: outs[i]![l]! })));
    const got = outs.map((perLayer) => perLayer.map((t) => Float32Array.from(t.read())));
    release();
    expect(got).toEqual(expected);
    expect(got[steps - 1]![1]).not.toEqual(got[steps - 2]![1]); // the steps' inputs differ, and so do their outputs
    cache.dispose();
  });
});
