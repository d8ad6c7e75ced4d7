// Where the time of a fused CUDA decode step goes: GPU milliseconds per stage (append, logits,
// select + reuse, fetch + rebuild, attention + merge, compaction) from events between the stages
// (CudaDevice.stepProfile), over steps with the benchmark's drifting queries, beside the step's
// total GPU time without the events: with each output read back to the host (the GPU waits for the
// host to issue the next step) and queued (outputs left on the device, steps back to back, the median
// of windows as bench/gpu/run.ts times its step), and the host's microseconds per queued step,
// decode() whole and each addon call in it, and the plan the queued steps ran (the select's cluster,
// logit blocks, row groups, the fetch's split and grid) with how they were launched (replayed from
// CUDA graphs or kernel by kernel). One Llama-3-8B layer, as in bench/gpu/run.ts.
//   node node_modules/tsx/dist/cli.mjs bench/gpu/profile.ts [--context 131072] [--batches 1,4] [--steps 50]
//     [--variants plain,fp8,hot2048,fp8+hot2048] [--policy shadowkv] [--pipeline 0,1w,1,4x264] [--out profile.json]
// A variant is the cache's options: plain (the defaults), fp8 (fp8Values), hot<N> (hotChunks N), joined by +.
// --policy full profiles the own full policy's step instead (append and attention; variant plain only).
// --pipeline times queued steps of the same cache in each setting, in two alternated rounds: N row
// groups (SHADOWKV_CUDA_STEP_GROUPS; 0 the default, by rows), then 'w' to keep the fetch whole with
// one group (SHADOWKV_CUDA_FETCH_SPLIT=0) and 'x<blocks>' for the split fetch's value reads
// (SHADOWKV_CUDA_FETCH_GRID), e.g. 0,1w,1,4,4x264.
// On the GPU machine: bash scripts/gpu/bench.sh runs run.ts; this one runs the same way after
// `. scripts/gpu/env.sh` (SHADOWKV_CUDA_SYNC=0, or every op waits).
import { writeFileSync } from 'node:fs';
import { cli, refuse } from '../../examples/cli.js';
import { buildCache, deviceInput, hostLoop, QUEUED_WARMUP, summary, timeQueued } from './measure.js';
import { registerBenchBackend } from './device.js';
import { SPEC } from './plan.js';
import { DriftingQueries, PromptSource, WORKLOAD_DEFAULTS } from './workload.js';
import { resolveBackend, type BaseKVCache } from '../../packages/shadowkv/src/backend.js';
import type { CudaDevice } from '../../packages/shadowkv-cuda/src/CudaDevice.js';

const f = cli('bench/gpu/profile', 'where the time of a fused CUDA decode step goes, stage by stage', {
  context: { kind: 'int', default: 131072, min: 64, max: 1 << 20, doc: 'prompt tokens' },
  batches: { kind: 'ints', default: [1, 4], min: 1, max: 4096, doc: 'rows' },
  steps: { kind: 'int', default: 50, min: 1, max: 1e6, doc: 'steps per measure' },
  variants: { kind: 'string', default: 'plain', doc: 'cache options, comma-separated: plain, fp8, packed, hot<N>, joined by +' },
  policy: { kind: 'choice', default: 'shadowkv', of: ['shadowkv', 'full'], doc: 'the policy profiled' },
  out: { kind: 'string', doc: 'a JSON of the results' },
  pipeline: { kind: 'string', doc: 'queued-step settings, comma-separated: groups, w (whole fetch), x<blocks>, e.g. 0,1w,4x264' },
});

/** A variant's cache options (`plain`, `fp8`, `packed`, `hot<N>`, joined by `+`). */
function variantOptions(name: string): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const part of name.split('+')) {
    if (part === 'fp8') o.fp8Values = true;
    else if (part === 'packed') o.packedValues = true;
    else if (/^hot\d+$/.test(part)) o.hotChunks = Number(part.slice(3));
    else if (part !== 'plain') throw new Error(`profile: unknown variant part ${part} (known: plain, fp8, packed, hot<N>)`);
  }
  return o;
}
/** Host microseconds per step of `work` (n steps): the whole, and each addon function called in it (wrapped while it runs). */
function hostCalls(device: CudaDevice, work: () => void, n: number): { decode: number; calls: Record<string, number> } {
  const d = device as unknown as { addon: Record<string, unknown> };
  const addon = d.addon, calls: Record<string, number> = {};
  d.addon = new Proxy(addon, {
    get(target, name) {
      const v = Reflect.get(target, name);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        const t = performance.now();
        try {
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        } finally {
          calls[String(name)] = (calls[String(name)] ?? 0) + ((performance.now() - t) * 1000) / n;
        }
      };
    },
  });
  const t = performance.now();
  try {
    work();
  } finally {
    d.addon = addon;
  }
  return { decode: ((performance.now() - t) * 1000) / n, calls };
}
/**
 * The read-back step's wall time (host arrays in and out: the js-overhead target's) taken apart:
 * decode() wall ms per step, the median over `steps`, with one part changed at a time: value checks
 * off; device-tensor inputs (uploaded before, at a new address every step, as measure.ts feeds
 * them); a device output and `synchronize()` after the call instead of the read into a host array.
 * Alternated over two rounds. Host inputs are written into the loop's own arrays just before each
 * call (as measure.ts's host-arrays mode), so the checks read them warm.
 */
function timeWallParts(cache: BaseKVCache, device: CudaDevice, queries: DriftingQueries, steps: number, hostOut: Float32Array): Record<string, number[]> {
  const B = queries.batch;
  const devOut = cache.allocTensor([B, SPEC.queryHeads, 1, SPEC.headDim], 'f32');
  const { loop, write } = hostLoop(queries.next());
  type Part = { host: boolean; checks: boolean; read: boolean };
  const parts: Record<string, Part> = {
    'host in, checks, read back': { host: true, checks: true, read: true },
    'host in, no checks, read back': { host: true, checks: false, read: true },
    'host in, checks, device out + sync': { host: true, checks: true, read: false },
    'device in, read back': { host: false, checks: false, read: true },
    'device in, device out + sync': { host: false, checks: false, read: false },
  };
  const res: Record<string, number[]> = {};
  try {
    for (let round = 0; round < 2; round++) for (const [name, p] of Object.entries(parts)) {
      const inputs = Array.from({ length: steps + QUEUED_WARMUP }, () => queries.next());
      const staged = p.host ? [] : inputs.map((x) => deviceInput(cache, x));
      const opts = { out: p.read ? hostOut : devOut, checkValues: p.checks };
      const walls: number[] = [];
      try {
        for (let i = 0; i < inputs.length; i++) {
          if (p.host) write(inputs[i]!);
          const input = p.host ? loop : staged[i]!;
          const t = performance.now();
          cache.decode(0, input, opts as { out: Float32Array });
          if (!p.read) device.synchronize();
          if (i >= QUEUED_WARMUP) walls.push(performance.now() - t);
        }
      } finally {
        for (const x of staged) x.query.dispose(), x.key.dispose(), x.value.dispose();
      }
      (res[name] ??= []).push(summary(walls).median);
    }
  } finally {
    devOut.dispose();
  }
  return res;
}
const S = f.context, steps = f.steps;
const policy = f.policy as 'shadowkv' | 'full';
if (policy === 'full' && f.variants !== 'plain') refuse('bench/gpu/profile', '--policy full takes only --variants plain');
const variants = f.variants.split(',');
for (const v of variants) {
  try {
    variantOptions(v);
  } catch (err) {
    refuse('bench/gpu/profile', `--variants: ${(err as Error).message.replace(/^profile: /, '')}`);
  }
}
// Each setting of --pipeline, checked before any work.
const settings = (f.pipeline ?? '').split(',').filter(Boolean).map((setting) => {
  const m = /^(\d+)(w?)(?:x(\d+))?$/.exec(setting);
  if (!m) refuse('bench/gpu/profile', `--pipeline: bad setting '${setting}' (e.g. 0, 1w, 4x264)`);
  return { setting, groups: Number(m[1]), whole: m[2] === 'w', grid: m[3] };
});
const t0 = performance.now();
const log = (line: string) => console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${line}`);
const backendName = registerBenchBackend('cuda');
const { backend } = await resolveBackend(backendName);
const scratch = backend.createDevice();
const source = new PromptSource(SPEC, S, WORKLOAD_DEFAULTS, scratch);
scratch.dispose();
const prompt = source.prompt(S);
const results = [];
for (const B of f.batches) for (const variant of variants) {
  const built = await buildCache(policy, backendName, B, prompt, log, variantOptions(variant));
  const device = built.device as unknown as CudaDevice;
  const queries = new DriftingQueries(source, B, S, WORKLOAD_DEFAULTS.seed + B);
  for (let i = 0; i < 10; i++) built.cache.decode(0, queries.next()); // warm: workspaces, first misses
  // Read back: each step's output comes to a host array, so the next step is issued to an idle GPU
  // and its time includes the host issuing the step's kernels. The array is the caller's, as in the
  // benchmark's wall loop (measure.ts): without `out` every step would also make and zero a new one
  // (64 KB at 4 rows; 12 us of a step's JavaScript on the stub addon, bench/NOTES.md v45).
  const hostOut = new Float32Array(B * SPEC.queryHeads * SPEC.headDim);
  const plain: number[] = [];
  for (let i = 0; i < steps; i++) {
    const input = queries.next();
    plain.push(device.gpuTime(() => built.cache.decode(0, input, { out: hostOut })));
  }
  // Queued: outputs left on the device (as a model loop on the GPU does), steps issued back to back,
  // timed as the benchmark's step (the median of its windows). NOTE: one window of 60 steps read 1 x
  // 128K at 0.099-0.116 ms over three rounds of one addon in one call (bench/NOTES.md v38), more
  // than the 1-5 us that side-by-side runs of this script are asked to tell apart.
  device.stepProfile(false); // starts the launch counts afresh
  const queuedMs = timeQueued(built, queries, steps);
  const { launches, plan } = device.stepProfile(false); // the queued steps': replayed graphs, and the plan they ran
  const out = built.cache.allocTensor([B, SPEC.queryHeads, 1, SPEC.headDim], 'f32');
  for (let i = 0; i < QUEUED_WARMUP; i++) built.cache.decode(0, queries.next(), { out }); // the new output's step graphs
  const profiled = (feed: (i: number) => void) => {
    device.stepProfile(true);
    for (let i = 0; i < steps; i++) feed(i);
    const { stages, steps: n } = device.stepProfile(false);
    return Object.fromEntries(Object.entries(stages).map(([k, v]) => [k, v / Math.max(n, 1)]));
  };
  // Host time of the queued steps: decode() wall, and within it each addon call (a timing proxy).
  const hostInputs = Array.from({ length: steps }, () => queries.next());
  const host = hostCalls(device, () => hostInputs.forEach((input) => built.cache.decode(0, input, { out })), steps);
  // Host time of read-back steps (host-array output, as the js-overhead target's wall time): each
  // call starts with the GPU idle, so decodeLayer is the host's own work and read holds the wait.
  const readInputs = Array.from({ length: steps }, () => queries.next());
  device.stepProfile(false);
  const hostRead = hostCalls(device, () => readInputs.forEach((input) => built.cache.decode(0, input, { out: hostOut })), steps);
  const { host: native } = device.stepProfile(false); // decodeLayer's own parts in those calls
  const wallParts = timeWallParts(built.cache, device, queries, steps, hostOut);
  const perStep = profiled(() => built.cache.decode(0, queries.next(), { out: hostOut }));
  const queuedInputs = Array.from({ length: steps }, () => queries.next());
  const perStepQueued = profiled((i) => built.cache.decode(0, queuedInputs[i]!, { out }));
  // The same cache's queued steps at each setting of the pipeline: the device's step_groups field
  // (which it reads from the environment when made) and the addon's per-step settings.
  const pipeline: Record<string, number[]> = {};
  const setEnv = (name: string, value: string | undefined) => (value === undefined ? delete process.env[name] : (process.env[name] = value));
  for (let round = 0; round < 2 && settings.length; round++) for (const { setting, groups, whole, grid } of settings) {
    (device as unknown as { stepGroups: number }).stepGroups = groups;
    setEnv('SHADOWKV_CUDA_FETCH_SPLIT', whole ? '0' : undefined);
    setEnv('SHADOWKV_CUDA_FETCH_GRID', grid);
    for (let i = 0; i < QUEUED_WARMUP; i++) built.cache.decode(0, queries.next(), { out });
    const xs = Array.from({ length: steps }, () => queries.next());
    (pipeline[setting] ??= []).push(device.gpuTime(() => xs.forEach((input) => built.cache.decode(0, input, { out }))) / steps);
  }
  setEnv('SHADOWKV_CUDA_FETCH_SPLIT', undefined);
  setEnv('SHADOWKV_CUDA_FETCH_GRID', undefined);
  out.dispose();
  const r = { context: S, batch: B, policy, variant, steps, stepGpuMs: summary(plain), queuedStepGpuMs: queuedMs, stagesMs: perStep, stagesQueuedMs: perStepQueued, hostUs: host, hostReadBackUs: { ...hostRead, decodeLayer: native }, wallParts, pipeline, launches, plan, stats: built.cache.stats() };
  results.push(r);
  const us = (st: Record<string, number>) => Object.entries(st).map(([k, v]) => `${k} ${(v * 1000).toFixed(0)}`).join(', ');
  log(`${S / 1024}K x ${B} ${policy} ${variant}: step ${summary(plain).median.toFixed(3)} ms read back (GPU, median), ${queuedMs.toFixed(3)} ms queued`);
  log(`  queued steps: plan ${Object.entries(plan).map(([k, v]) => `${k} ${v}`).join(', ')}; launches: ${launches.replayed} replayed, ${launches.captured} captured, ${launches.oneByOne} one by one${launches.graphsBroken ? ' (graphs broken)' : ''}${launches.landedFallbacks ? `, ${launches.landedFallbacks} attention blocks waited for the fetch's end (a landed count short)` : ''}`);
  log(`  stages (us), read back: ${us(perStep)}`);
  log(`  stages (us), queued:    ${us(perStepQueued)}`);
  const hostLine = (h: typeof host) => `decode() ${h.decode.toFixed(1)}; addon calls ${Object.entries(h.calls).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`;
  log(`  host (us per queued step): ${hostLine(host)}`);
  log(`  host (us per read-back step): ${hostLine(hostRead)}; in decodeLayer ${Object.entries(native).filter(([k]) => k !== 'calls').map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`);
  for (const [k, ms] of Object.entries(wallParts)) log(`  wall, ${k}: ${ms.map((x) => x.toFixed(3)).join(' / ')} ms (median)`);
  for (const [k, ms] of Object.entries(pipeline)) log(`  queued, pipeline ${k}: ${ms.map((x) => x.toFixed(3)).join(' / ')} ms`);
  built.cache.dispose();
}
if (f.out) writeFileSync(f.out, `${JSON.stringify({ date: new Date().toISOString(), command: `bench/gpu/profile.ts ${process.argv.slice(2).join(' ')}`, results }, null, 2)}\n`);
