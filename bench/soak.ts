// The soak (npm run soak): 20,000 decode steps of a small ShadowKV cache whose recent region compacts
// hundreds of times, beside a FullKVCache fed the same inputs (the exact answer), then 500
// create/dispose cycles of a ~20 MB cache, twice: dropping every reference, and keeping every
// disposed cache referenced. Exits non-zero when RSS grows by more than 200 MB over a create/dispose phase.
//   npm run soak -- [--steps 20000] [--cycles 500] [--out <file.json>]
// The documented run (20,000 steps, 500 cycles) writes bench/results/soak.json; a shorter one, a
// quick look, writes <tmpdir>/shadowkv/soak.json unless --out says where (bench/output.ts).
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCache, toFloat32, type Cache, type ShadowKVCache } from '../packages/shadowkv/src/index.js';
import { cosine, relError } from '../examples/workloads/metrics.js';
import { NeedleWorkload } from '../examples/workloads/needle.js';
import { randn, rng } from '../examples/workloads/random.js';
import { globalGc, rssMB, settledRssMB } from '../examples/workloads/memory.js';
import { cli, refuseRetiredEnv } from '../examples/cli.js';
import { resultsPath } from './output.js';

const DOCUMENTED = { steps: 20_000, cycles: 500 };
const args = cli('soak', 'long decode and create/dispose cycles: output drift and memory growth', {
  steps: { kind: 'int', default: DOCUMENTED.steps, min: 1, max: 1e7, doc: 'decode steps' },
  cycles: { kind: 'int', default: DOCUMENTED.cycles, min: 1, max: 1e6, doc: 'create/dispose cycles per phase' },
  out: { kind: 'string', doc: 'the JSON to write (default: bench/results/soak.json for the documented run, else the temp dir)' },
});
refuseRetiredEnv('soak', { SOAK_STEPS: '--steps', SOAK_CYCLES: '--cycles' });
const STEPS = args.steps;
const CYCLES = args.cycles;
const OUT = resultsPath('soak', args.out, fileURLToPath(new URL('./results/soak.json', import.meta.url)), { steps: [STEPS, DOCUMENTED.steps], cycles: [CYCLES, DOCUMENTED.cycles] });
const SAMPLE_EVERY = 1000;
const RSS_GROWTH_LIMIT_MB = 200;
const MB = 2 ** 20;
const gc = globalGc();
const settle = () => settledRssMB(gc);

// Small geometry; budget and recent region small so that compaction runs every 64 steps per row.
const spec = { layers: 2, queryHeads: 8, kvHeads: 2, headDim: 32, rope: { theta: 10000 } };
const options = { budget: 128, rank: 32, chunkSize: 8, outlierChunks: 2, localTokens: 16, maxRecentTokens: 64, denseThreshold: 512, hostPageChunks: 64 };
const PROMPT = 1024;
// The create/dispose cache: 2560 tokens x 8 kv heads x 128 dims x 4 bytes x (K, V) = 20 MiB.
const cycleSpec = { layers: 1, queryHeads: 8, kvHeads: 8, headDim: 128, rope: { theta: 10000 } };
const CYCLE_TOKENS = 2560;

const start = performance.now();
const log = (line: string) => console.log(`[${((performance.now() - start) / 1000).toFixed(1).padStart(6)} s] ${line}`);
interface MemorySample {
  step: number;
  tokens: number;
  devicePerToken: number;
  hostPerToken: number;
  densePerToken: number;
  fullDevicePerToken: number;
  wasmHeap: number;
  compactions: number;
  windowWorstCosine: number;
  windowMeanCosine: number;
  windowWorstRelError: number;
}

async function soak() {
  const shadow = (await createCache({ spec, policy: 'shadowkv', dtype: 'bf16', backend: 'wasm', options })) as ShadowKVCache;
  const full = await createCache({ spec, policy: 'full', dtype: 'bf16', backend: 'wasm' });
  // Focus 12: the queries keep most of their attention on the needle as the context grows to 21K, as a
  // retrieval head's do, so a drift of the compressed store would show as error (diffuse attention
  // makes top-k attention's own bias the larger error, which is not what the soak looks for).
  const work = new NeedleWorkload(spec, { tokens: PROMPT, seed: 11, focus: 12 });
  for (let l = 0; l < spec.layers; l++) {
    const { keys, values } = work.prompt(l, 1);
    shadow.prefill(l, { keys, values });
    full.prefill(l, { keys, values });
  }
  log(`soak: ${PROMPT}-token prompt in; ${STEPS} decode steps of ${spec.layers} layers (ShadowKV budget ${options.budget}, recent region ${options.maxRecentTokens})`);
  const samples: MemorySample[] = [];
  let shadowMs = 0;
  let fullMs = 0;
  let worstCosine = 1;
  let worstRel = 0;
  let sumCosine = 0;
  let sumRel = 0;
  let window = { cos: 1, rel: 0, sum: 0, n: 0 };
  for (let step = 1; step <= STEPS; step++) {
    for (let l = 0; l < spec.layers; l++) {
      const input = work.step(l, 1);
      let t = performance.now();
      const a = shadow.decode(l, input);
      shadowMs += performance.now() - t;
      t = performance.now();
      const b = full.decode(l, input);
      fullMs += performance.now() - t;
      const [fa, fb] = [toFloat32(a), toFloat32(b)];
      const c = cosine(fa, fb);
      const r = relError(fa, fb);
      worstCosine = Math.min(worstCosine, c);
      worstRel = Math.max(worstRel, r);
      sumCosine += c;
      sumRel += r;
      window = { cos: Math.min(window.cos, c), rel: Math.max(window.rel, r), sum: window.sum + c, n: window.n + 1 };
    }
    if (step % SAMPLE_EVERY === 0 || step === STEPS) {
      const m = shadow.memory();
      const tokens = spec.layers * shadow.length(0);
      const s: MemorySample = {
        step, tokens,
        devicePerToken: m.device / tokens, hostPerToken: m.host / tokens, densePerToken: m.dense / tokens,
        fullDevicePerToken: full.memory().device / tokens, wasmHeap: m.wasmHeap ?? 0,
        compactions: shadow.stats().compactions, windowWorstCosine: window.cos, windowMeanCosine: window.sum / window.n, windowWorstRelError: window.rel,
      };
      samples.push(s);
      window = { cos: 1, rel: 0, sum: 0, n: 0 };
      log(`step ${step}: ${tokens} tokens; device ${s.devicePerToken.toFixed(1)} B/token, host ${s.hostPerToken.toFixed(1)} B/token (dense ${s.densePerToken.toFixed(0)}); heap ${(s.wasmHeap / MB).toFixed(1)} MiB; ${s.compactions} compactions; cosine worst ${s.windowWorstCosine.toFixed(4)} mean ${s.windowMeanCosine.toFixed(4)}, worst rel. error ${s.windowWorstRelError.toFixed(4)}; ${(step / (shadowMs / 1000)).toFixed(0)} steps/s`);
    }
  }
  const n = STEPS * spec.layers;
  const result = {
    steps: STEPS,
    prompt: PROMPT,
    stepsPerSecond: { shadowkv: STEPS / (shadowMs / 1000), full: STEPS / (fullMs / 1000) },
    compactions: shadow.stats().compactions,
    compressions: shadow.stats().compressions,
    error: { worstCosine, worstRelError: worstRel, meanCosine: sumCosine / n, meanRelError: sumRel / n },
    memory: samples,
    // Memory per token must not creep: the last sample against the first.
    devicePerTokenGrowth: samples.length > 1 ? samples[samples.length - 1]!.devicePerToken / samples[0]!.devicePerToken : 1,
  };
  shadow.dispose();
  full.dispose();
  return result;
}

interface Phase {
  phase: string;
  cycles: number;
  rssBeforeMB: number;
  rssPeakMB: number;
  rssAfterMB: number;
  growthMB: number;
  ok: boolean;
  msPerCycle: number;
}

/** `CYCLES` caches of ~20 MB made, filled and disposed; `keep` keeps every disposed cache referenced. */
async function cycles(keep: boolean): Promise<Phase> {
  const phase = keep ? 'create/dispose, disposed caches kept referenced' : 'create/dispose, references dropped';
  const rand = rng(5);
  const n = cycleSpec.kvHeads * CYCLE_TOKENS * cycleSpec.headDim;
  const keys = { data: randn(n, rand, 1, new Float32Array(n)), shape: [1, cycleSpec.kvHeads, CYCLE_TOKENS, cycleSpec.headDim], dtype: 'f32' as const };
  const values = { data: randn(n, rand, 1, new Float32Array(n)), shape: keys.shape, dtype: 'f32' as const };
  const kept: Cache[] = [];
  const before = await settle();
  let peak = before;
  const t0 = performance.now();
  for (let i = 1; i <= CYCLES; i++) {
    const cache = await createCache({ spec: cycleSpec, policy: 'full', dtype: 'f32', backend: 'wasm', maxTokens: CYCLE_TOKENS });
    cache.prefill(0, { keys, values });
    cache.dispose();
    if (keep) kept.push(cache);
    if (i % 50 === 0) {
      peak = Math.max(peak, rssMB());
      if (i % 250 === 0) log(`${phase}: ${i}/${CYCLES}, RSS ${rssMB().toFixed(0)} MB`);
    }
  }
  const ms = (performance.now() - t0) / CYCLES;
  const after = await settle();
  const growth = after - before;
  log(`${phase}: RSS ${before.toFixed(0)} → ${after.toFixed(0)} MB (peak ${peak.toFixed(0)} MB), ${kept.length} caches still referenced`);
  return { phase, cycles: CYCLES, rssBeforeMB: before, rssPeakMB: peak, rssAfterMB: after, growthMB: growth, ok: growth <= RSS_GROWTH_LIMIT_MB, msPerCycle: ms };
}

const decode = await soak();
log(`soak done: ShadowKV ${decode.stepsPerSecond.shadowkv.toFixed(0)} steps/s, full ${decode.stepsPerSecond.full.toFixed(0)} steps/s; worst cosine ${decode.error.worstCosine.toFixed(4)}, worst rel. error ${decode.error.worstRelError.toFixed(4)}; ${decode.compactions} compactions`);
const phases = [await cycles(false), await cycles(true)];
const ok = phases.every((p) => p.ok);
mkdirSync(dirname(OUT), { recursive: true });
writeFileSync(
  OUT,
  `${JSON.stringify({
    date: new Date().toISOString(),
    command: `npm run soak${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version, loadavg: os.loadavg() },
    spec, options, dtype: 'bf16',
    decode,
    lifetimes: { cacheBytes: 2 * cycleSpec.kvHeads * CYCLE_TOKENS * cycleSpec.headDim * 4, rssGrowthLimitMB: RSS_GROWTH_LIMIT_MB, phases },
    ok,
  }, null, 2)}\n`,
);
log(`wrote ${OUT}${ok ? '' : `; RSS grew by more than ${RSS_GROWTH_LIMIT_MB} MB over a phase`}`);
process.exit(ok ? 0 : 1);
