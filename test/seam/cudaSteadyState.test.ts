import { describe, expect, it } from 'vitest';
import { createCache, FullKVCache, registerBackend, resolveBackend, type Backend, type ShadowKVCache } from '../../packages/shadowkv/src/backend.js';
import { CudaDevice, findAddon, type CudaAddon } from '../../packages/shadowkv-cuda/src/index.js';
import { loadAddon } from '../../packages/shadowkv-cuda/src/loadAddon.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { ENVS } from '../envs.js';

// The CUDA twin of steadyState.test.ts: every addon call of warm decode steps counted. A layer step
// is one stageStepInputs call (q, k and v checked and copied into the pinned upload in one native
// pass, no GPU), one decodeLayer call that sends them up with the step (no wait inside it) and the
// output's read (readHost: the kernels wrote it into the addon's pinned output block, which is
// asked for only to grow); no allocation, no synchronize, no op call.
const cuda = ENVS.ready.find((e) => e.backend === 'cuda');
const calls = new Map<string, number>();
const spec = { layers: 2, queryHeads: 8, kvHeads: 2, headDim: 32, rope: { theta: 10000 } };
const options = { budget: 64, rank: 24, chunkSize: 8, localTokens: 8, maxRecentTokens: 32, denseThreshold: 256 };

function counted(x: CudaAddon): CudaAddon {
  return new Proxy(x, {
    get(target, name, receiver) {
      const v = Reflect.get(target, name, receiver);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        calls.set(String(name), (calls.get(String(name)) ?? 0) + 1);
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

const suite = cuda ? describe : describe.skip;
suite(`steady-state decode (instrumented) [cuda]${cuda ? '' : ' skipped: no CUDA device'}`, () => {
  // The wide case: 48 rows of Llama-3 heads, whose step uploads q | k | v of 1.2 MB (past one
  // staging piece; as one synchronous copy it waited for every queued kernel).
  const wide = { layers: 2, queryHeads: 32, kvHeads: 8, headDim: 128, rope: { theta: 10000 } };
  it.each([[spec, 1], [spec, 4], [wide, 48]] as const)('%o, batch %i: one decodeLayer call per layer step, no allocation and no synchronous copy in 100 steps', async (spec, batch) => {
    const addon = countedAddon();
    const work = new NeedleWorkload(spec, { tokens: 700, seed: 11 });
    const cache = (await createCache({ spec, batch, dtype: 'bf16', backend: 'cuda-counted', options })) as ShadowKVCache;
    for (let l = 0; l < spec.layers; l++) cache.prefill(l, work.prompt(l, batch));
    const inputs = Array.from({ length: 170 }, () => Array.from({ length: spec.layers }, (_, l) => work.step(l, batch)));
    const out = new Float32Array(batch * spec.queryHeads * spec.headDim);
    const run = (steps: typeof inputs) => steps.forEach((perLayer) => perLayer.forEach((input, l) => cache.decode(l, input, { out })));
    run(inputs.slice(0, 70)); // compression, workspace sizing, the store's first growth
    const allocationsBefore = addon.allocCount();
    const syncBefore = addon.memoryStats().syncCopies;
    const compactionsBefore = cache.stats().compactions;
    addon.stepProfile(false); // the launch counts start here
    calls.clear();
    run(inputs.slice(70, 170));
    const layerSteps = 100 * spec.layers;
    expect(Object.fromEntries(calls)).toEqual({ stageStepInputs: layerSteps, decodeLayer: layerSteps, readHost: layerSteps });
    // Each step launched once, as a graph's replay, its capture or kernel by kernel; the plan is a sparse step's.
    const { launches, plan, host } = addon.stepProfile(false);
    // Every step found its inputs in the upload already (stageStepInputs), none copied twice.
    expect([host.calls, host.staged]).toEqual([layerSteps, layerSteps]);
    expect(launches.replayed + launches.captured + launches.oneByOne).toBe(layerSteps);
    expect(launches.graphsBroken).toBe(false);
    // Every attention block found its task's keys and values landed by the fetch's counts.
    expect(launches.landedFallbacks).toBe(0);
    expect(plan.logitSplit).toBeGreaterThanOrEqual(1);
    expect(plan.rowGroups).toBeGreaterThanOrEqual(1);
    expect(addon.allocCount() - allocationsBefore).toBe(0);
    expect(addon.memoryStats().syncCopies - syncBefore).toBe(0);
    expect(cache.stats().compactions - compactionsBefore).toBeGreaterThanOrEqual(2 * batch * spec.layers);
    cache.dispose();
  });

  // One upload ring serves every cache of the process: a policy hook (beforeStep) that runs another
  // cache's step between this step's stageStepInputs and its decodeLayer overwrites what was staged,
  // so this step's ticket is stale and its inputs are copied again from its arrays. Were the ticket
  // taken anyway, this cache would attend with the other's q, k and v.
  it('a policy hook that runs another cache\'s step inside a step: both outputs as when the steps run apart', async () => {
    const addon = countedAddon();
    const batch = 2, steps = 4;
    const prompt = new NeedleWorkload(spec, { tokens: 300, seed: 5 });
    const prompts = Array.from({ length: spec.layers }, (_, l) => prompt.prompt(l, batch));
    const stepsOf = (seed: number) => {
      const work = new NeedleWorkload(spec, { tokens: 300, seed });
      return Array.from({ length: steps }, () => Array.from({ length: spec.layers }, (_, l) => work.step(l, batch)));
    };
    const [mine, theirs] = [stepsOf(6), stepsOf(7)];
    class Hooked extends FullKVCache {
      hook?: (layer: number) => void;
      protected override beforeStep(layer: number, seqs: readonly number[]): void {
        this.hook?.(layer);
        super.beforeStep(layer, seqs);
      }
    }
    const make = async () => {
      const { backend, info } = await resolveBackend('cuda-counted');
      const cache = new Hooked({ spec, batch, dtype: 'bf16' }, { device: backend.createDevice(), info });
      prompts.forEach((p, l) => cache.prefill(l, p));
      return cache;
    };
    const read = (t: { data: ArrayLike<number> }) => Float32Array.from(t.data);
    const [a, b] = [await make(), await make()];
    const apart = mine.map((perLayer, i) => perLayer.map((x, l) => [read(a.decode(l, x)), read(b.decode(l, theirs[i]![l]!))]));
    [a, b].forEach((c) => c.dispose());
    const [c, d] = [await make(), await make()];
    let i = 0, inner: Float32Array[] = [];
    c.hook = (l) => void inner.push(read(d.decode(l, theirs[i]![l]!)));
    addon.stepProfile(false);
    const together = mine.map((perLayer, k) => perLayer.map((x, l) => {
      i = k;
      inner = [];
      const outer = read(c.decode(l, x));
      return [outer, inner[0]!];
    }));
    const { host } = addon.stepProfile(false);
    expect(together).toEqual(apart);
    // d's steps took their staged inputs; c's found theirs overwritten.
    expect([host.calls, host.staged]).toEqual([2 * steps * spec.layers, steps * spec.layers]);
    [c, d].forEach((x) => x.dispose());
  });

  // A host loop on the GPU whose q, k, v and out sit somewhere new every step (a framework's
  // allocator): the kernels read them from the step's upload (kernels/launchers.h SkvStepIo), so
  // the steps replay the graphs that steps at fixed addresses make; were the addresses part of a
  // graph's key, no step here would replay one (no tensor is freed, so none comes back).
  it.each(['shadowkv', 'full'] as const)('%s: device tensors at new addresses every step replay CUDA graphs, with the outputs of host arrays', async (policy) => {
    const addon = countedAddon();
    const batch = 4, steps = 40, warm = 16;
    const inputs = (() => {
      const work = new NeedleWorkload(spec, { tokens: 700, seed: 13 });
      return Array.from({ length: steps }, () => Array.from({ length: spec.layers }, (_, l) => work.step(l, batch)));
    })();
    const make = async () => {
      const cache = await createCache({ spec, batch, dtype: 'bf16', backend: 'cuda-counted', policy, ...(policy === 'shadowkv' ? { options } : {}) });
      const prompt = new NeedleWorkload(spec, { tokens: 700, seed: 13 });
      for (let l = 0; l < spec.layers; l++) cache.prefill(l, prompt.prompt(l, batch));
      return cache;
    };
    const reference = await make();
    const expected = inputs.map((perLayer) => perLayer.map((input, l) => Float32Array.from(reference.decode(l, input).data)));
    reference.dispose();
    const cache = await make();
    const got = inputs.map((perLayer, i) => {
      if (i === warm) addon.stepProfile(false); // the launch counts start here
      return perLayer.map((input, l) => {
        const [query, key, value] = [input.query, input.key, input.value].map((t) => cache.allocTensor(t.shape, t.dtype, t.data));
        const out = cache.allocTensor([batch, spec.queryHeads, 1, spec.headDim], 'f32');
        cache.decode(l, { query: query!, key: key!, value: value! }, { out });
        return Float32Array.from(out.read());
      });
    });
    const { launches } = addon.stepProfile(false);
    const layerSteps = (steps - warm) * spec.layers;
    expect(launches.replayed + launches.captured + launches.oneByOne).toBe(layerSteps);
    expect(launches.graphsBroken).toBe(false);
    // With SHADOWKV_CUDA_GRAPHS=0 (kernels/common.cuh skv_env_off) every step goes kernel by kernel.
    if (process.env.SHADOWKV_CUDA_GRAPHS === '0') expect(launches.oneByOne).toBe(layerSteps);
    else expect(launches.replayed, JSON.stringify(launches)).toBeGreaterThanOrEqual(layerSteps / 2);
    expect(got).toEqual(expected);
    expect(got[steps - 1]![1]).not.toEqual(got[steps - 2]![1]);
    cache.dispose();
  });
});

let shared: CudaAddon | undefined;
/** The counted addon and its backend, made once per process (a backend name is registered once). */
function countedAddon(): CudaAddon {
  if (shared) return shared;
  const addon = counted(loadAddon(findAddon()));
  registerBackend('cuda-counted', async (): Promise<Backend> => {
    const { backend } = await resolveBackend('cuda');
    return { ...backend, name: 'cuda-counted', createDevice: () => new CudaDevice(addon, 0) };
  }, 0);
  shared = addon;
  return addon;
}
