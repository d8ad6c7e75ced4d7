import { describe, expect, it } from 'vitest';
import { createCache, registerBackend, resolveBackend, type Backend, type ShadowKVCache } from '../../packages/shadowkv/src/backend.js';
import { CudaDevice, findAddon, type CudaAddon } from '../../packages/shadowkv-cuda/src/index.js';
import { loadAddon } from '../../packages/shadowkv-cuda/src/loadAddon.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { ENVS } from '../envs.js';

// The CUDA twin of steadyState.test.ts: every addon call of warm decode steps counted. A layer step
// is the input check (q, k, v: native scans of the host arrays, no GPU), one decodeLayer call that
// uploads them with the step (no wait inside it) and the output read; no allocation, no
// synchronize, no op call.
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
    expect(Object.fromEntries(calls)).toEqual({ checkFiniteHost: 3 * layerSteps, decodeLayer: layerSteps, read: layerSteps });
    // Each step launched once, as a graph's replay, its capture or kernel by kernel; the plan is a sparse step's.
    const { launches, plan } = addon.stepProfile(false);
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
