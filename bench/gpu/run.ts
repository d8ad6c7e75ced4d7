// GPU BENCHMARK (issue 7): one Llama-3-8B layer, bf16, ShadowKV (budget 2048, rank 160, chunk 8,
// 48 outlier chunks) against dense attention, at 32K / 64K / 128K and batch 1, 4, 16 and the
// largest whole-model batch. Writes gpu-<card>.json and gpu-<card>.svg and prints the targets.
//   npx tsx bench/gpu/run.ts [--contexts 32768,65536,131072] [--batches 1,4,16,max] [--steps 50]
//     [--warmup 10] [--backend cuda] [--modes decode,full,forced,hot,fp8,packed,largest,prefill] [--out <json or dir>]
//     [--sdpa sdpa.json] [--plan plan.json]   (--help lists every flag; what they mean: bench/README.md)
// Without --out, the documented grid (every flag but --sdpa and --plan at its default) writes bench/results/
// and any other, a trial, <tmpdir>/shadowkv/results/ (bench/output.ts).
// On the GPU machine: bash scripts/gpu/bench.sh, which runs this with --plan, then bench/gpu/sdpa.py
// (dense PyTorch timings of the same plan), then this again with --sdpa.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  estimateMemory, resolveBackend, type Backend, type FullKVCache, type ShadowKVCache, type ShadowKVOptions,
} from '../../packages/shadowkv/src/backend.js';
import { findAddon, loadAddon } from '../../packages/shadowkv-cuda/src/loadAddon.js';
import { registerBenchBackend } from './device.js';
import {
  buildCache, INPUT_MODES, maxAbs, outputError, stepOutputs, summary, timeDecode, timeForced, type Built, type DecodeTiming, type OutputError,
} from './measure.js';
import { cardSlug, makePlan, parseBenchArgs, SHADOWKV, SPEC, type Card } from './plan.js';
import { plotSvg } from './plot.js';
import { computeTargets, targetLines, type CaseResult, type Report, type SdpaReport } from './report.js';
import { DriftingQueries, PromptSource } from './workload.js';
import { fetchRatio, packedChunks } from '../packRule.js';

// ------------------------------------------------------------------------------------------------
// Arguments, backend, card, plan

const args = parseBenchArgs();
const t0 = performance.now();
const elapsed = () => (performance.now() - t0) / 1000;
const log = (line: string) => console.log(`[${elapsed().toFixed(1).padStart(6)} s] ${line}`);
// --inputs a,b: the decode step timed with each way of feeding it; the first is the case's `shadowkv`.
const inputModes = args.inputs.split(',').map((name) => {
  const mode = INPUT_MODES[name];
  if (!mode) throw new RangeError(`--inputs: unknown '${name}'; known: ${Object.keys(INPUT_MODES).join(', ')}`);
  return { name, mode };
});
const inputMode = inputModes[0]!.mode;

const backendName = registerBenchBackend(args.backend);
let backend: Backend;
try {
  backend = (await resolveBackend(backendName)).backend;
} catch (err) {
  console.error(`bench:gpu: the ${args.backend} backend cannot start: ${(err as Error).message}`);
  process.exit(1);
}
const GiB = 2 ** 30;
// The CUDA addon itself, for the card's memory (the backend loaded it already; this is the same module).
const addon = backend.name === 'cuda' ? loadAddon(findAddon()) : undefined;
const info = addon?.deviceInfo(0);
const card: Card = {
  name: info?.name ?? backend.description,
  slug: info ? cardSlug(info.name) : backend.name,
  totalBytes: args.deviceGib !== undefined ? args.deviceGib * GiB : info?.totalBytes ?? 4 * GiB,
  description: backend.description,
};
const freeBytes = () => addon?.memInfo().free;
const plan = makePlan(args, card);
if (args.plan) {
  writeFileSync(args.plan, `${JSON.stringify(plan, null, 1)}\n`);
  log(`plan for ${card.name} (${(card.totalBytes / GiB).toFixed(1)} GiB): ${plan.contexts.map((S) => `${S}: batches ${plan.batches[S]!.join(', ')}`).join('; ')}${plan.largest ? `; largest at ${plan.largest.context}: ShadowKV ${plan.largest.shadowkv}, dense ${plan.largest.dense}` : ''} -> ${args.plan}`);
  process.exit(0);
}

const sdpa: SdpaReport | undefined = args.sdpa && existsSync(args.sdpa) ? JSON.parse(readFileSync(args.sdpa, 'utf8')) : undefined;
if (args.sdpa && !sdpa) log(`no ${args.sdpa}: no PyTorch timings, so speedups and targets against SDPA are N/A`);
const sdpaAt = (context: number, batch: number) => sdpa?.decode.find((s) => s.context === context && s.batch === batch);

const git = (...a: string[]) => {
  try {
    return execFileSync('git', a, { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return null;
  }
};
const jsonPath = args.out.endsWith('.json') ? args.out : join(args.out, `gpu-${card.slug}.json`);
const svgPath = jsonPath.replace(/\.json$/, '.svg');
const report: Report = {
  date: new Date().toISOString(),
  command: process.env.BENCH_COMMAND ?? `npx tsx bench/gpu/run.ts ${process.argv.slice(2).join(' ')}`,
  commit: process.env.BENCH_COMMIT ?? git('rev-parse', 'HEAD'),
  card,
  versions: { node: process.version, backend: backend.description, torch: sdpa?.torch, cuda: sdpa?.cuda, cudnn: sdpa?.cudnn },
  workload: {
    geometry: { queryHeads: SPEC.queryHeads, kvHeads: SPEC.kvHeads, headDim: SPEC.headDim, layers: 1, dtype: 'bf16' },
    shadowkv: { ...SHADOWKV, maxSelected: SHADOWKV.budget / SHADOWKV.chunkSize },
    prompt: { ...args.workload, note: 'one prompt per context (keys of rank keyRank + noise, needles planted), prefilled into every row; rows differ by their queries (seed + batch)' },
    inputs: { mode: args.inputs, note: inputModes.map(({ name, mode }) => `${name}: ${mode.note}`).join('; ') },
    step: 'not measured',
  },
  plan,
  cases: [],
  prefill: [],
  python: sdpa && { copy: sdpa.copy, eigh: sdpa.eigh, errors: sdpa.errors, seconds: sdpa.seconds },
  targets: [],
  phases: {},
  skipped: [],
};
mkdirSync(dirname(jsonPath), { recursive: true });
/** Written after every case, so a run cut short keeps what it measured. */
function save(): void {
  report.targets = computeTargets(report);
  writeFileSync(jsonPath, `${JSON.stringify(report, null, 1)}\n`);
  writeFileSync(svgPath, plotSvg(report));
}
async function phase<T>(name: string, work: () => T | Promise<T>): Promise<T> {
  const t = performance.now();
  try {
    return await work();
  } finally {
    report.phases[name] = (report.phases[name] ?? 0) + (performance.now() - t) / 1000;
  }
}
const overBudget = () => elapsed() > args.budgetSeconds;
const has = (m: (typeof args.modes)[number]) => args.modes.includes(m);
const ms = (v: number | undefined) => (v === undefined ? 'n/a' : `${v.toFixed(3)} ms`);
const mib = (bytes = 0) => (bytes / 2 ** 20).toFixed(2);

log(`${card.name}: ${backend.description}; ${plan.contexts.map((S) => `${S / 1024}K x ${plan.batches[S]!.join(',')}`).join('; ')}; modes ${args.modes.join(',')}; budget ${args.budgetSeconds} s`);

// ------------------------------------------------------------------------------------------------
// One case: ShadowKV (decode with drifting queries, forced hit rates, the largest batch), then full

type Prompt = ReturnType<PromptSource['prompt']>;

/** Compression times per context: each cache's first row apart (warm-up), the others. */
const compressSamples = new Map<number, { first: number[]; rest: number[] }>();

function noteBuild(S: number, b: Built<ShadowKVCache>): void {
  const s = compressSamples.get(S) ?? { first: [], rest: [] };
  const [first, ...rest] = b.build.compress_ms?.samples ?? [];
  if (first !== undefined) s.first.push(first);
  s.rest.push(...rest);
  compressSamples.set(S, s);
  report.workload.step = b.clock.fused ? 'fused (Device.decodeLayer, one runtime call per layer step)' : 'composed (decodeLayerComposed: the ops one by one)';
}

async function shadowCase(c: CaseResult, source: PromptSource, prompt: Prompt): Promise<void> {
  const { context: S, batch: B } = c;
  const largest = plan.largest && plan.largest.context === S && plan.largest.shadowkv === B;
  if (!has('decode') && !has('forced') && !largest) return;
  log(`${S / 1024}K x ${B}: building ShadowKV (${B} rows: prefill, then compress, row by row)`);
  let built: Built<ShadowKVCache>;
  try {
    built = await phase('build', () => buildCache('shadowkv', backendName, B, prompt, log));
  } catch (err) {
    c.skipped!.push(`shadowkv: ${(err as Error).message}`);
    if (largest) largestResult(c, undefined, (err as Error).message);
    return;
  }
  try {
    c.build = built.build;
    noteBuild(S, built);
    log(`  built in ${built.build.seconds.toFixed(1)} s: compress ${ms(built.build.compress_ms?.median)} per row (median), device ${(built.build.memory.device / GiB).toFixed(2)} GiB, host ${(built.build.memory.host / GiB).toFixed(2)} GiB`);
    const queries = new DriftingQueries(source, B, S, args.workload.seed + B);
    if (has('decode') || largest) {
      const t = await phase('decode', () => timeDecode(built, queries, args, inputMode!));
      const sd = c.sdpa?.best?.ms;
      c.shadowkv = { ...t, ...(sd ? { speedup: sd / t.gpu_ms } : {}), equivalentTBps: c.denseKvBytes / (t.gpu_ms / 1000) / 1e12 };
      log(`  decode: GPU ${ms(t.gpu_ms)}, wall ${ms(t.wall_ms)} (median ${ms(t.wall_median_ms)}, ${t.steps} steps), hit rate ${t.sparse?.hitRate.toFixed(3)}, ${mib(t.sparse?.pcieBytesPerStep)} MiB/step PCIe; SDPA ${ms(sd)}${c.shadowkv.speedup ? ` -> ${c.shadowkv.speedup.toFixed(2)}x` : ''}`);
      for (const { name, mode } of inputModes.slice(1)) {
        const o = await phase('decode', () => timeDecode(built, queries, args, mode));
        (c.inputModes ??= {})[name] = o;
        log(`  decode (${name}): GPU ${ms(o.gpu_ms)}, wall ${ms(o.wall_ms)} (median ${ms(o.wall_median_ms)}, ${o.steps} steps)`);
      }
    }
    if (largest) largestResult(c, built);
    if (has('forced') && !overBudget()) {
      c.forced = await phase('forced', () => timeForced(built, queries, args.forcedRates, { ...args, seed: args.workload.seed }));
      log(`  forced: ${c.forced.map((f) => `rate ${f.rate}: ${ms(f.gpu_ms.median)} (measured hit rate ${f.hitRate.toFixed(3)})`).join('; ')}`);
    }
  } finally {
    built.cache.dispose();
  }
}

/**
 * The case's drifting steps (the same query sequence as its decode timing: same seed) on a cache
 * rebuilt with `extra` (modes hot, fp8 and packed); undefined, with why in `skipped`, where that cache
 * cannot be built or stepped (a backend without the option's kernels yet).
 */
async function timeRebuilt(c: CaseResult, source: PromptSource, prompt: Prompt, label: string, extra: ShadowKVOptions, mode: 'hot' | 'fp8' | 'packed'): Promise<(DecodeTiming & { speedup?: number }) | undefined> {
  const { context: S, batch: B } = c;
  let built: Built<ShadowKVCache> | undefined;
  try {
    built = await phase('build', () => buildCache('shadowkv', backendName, B, prompt, log, extra));
    const t = await phase(mode, () => timeDecode(built!, new DriftingQueries(source, B, S, args.workload.seed + B), args, inputMode!));
    const sd = c.sdpa?.best?.ms;
    return { ...t, ...(sd ? { speedup: sd / t.gpu_ms } : {}) };
  } catch (err) {
    return void c.skipped!.push(`${label}: ${(err as Error).message}`);
  } finally {
    built?.cache.dispose();
  }
}

/** Mode `hot`: the case's drifting steps again with each hot-value cache size (`--hot-chunks`). */
async function hotCase(c: CaseResult, source: PromptSource, prompt: Prompt): Promise<void> {
  for (const hotChunks of args.hotChunks) {
    if (overBudget()) return void c.skipped!.push(`hot ${hotChunks}: time budget spent`);
    const t = await timeRebuilt(c, source, prompt, `hot ${hotChunks}`, { hotChunks }, 'hot');
    if (!t) continue;
    (c.hot ??= []).push({ hotChunks, ...t });
    log(`  hot ${hotChunks}: GPU ${ms(t.gpu_ms)}, hit rate ${t.sparse?.hitRate.toFixed(3)}, hot ${t.sparse?.hotHitRate.toFixed(3)} of misses, on device ${t.sparse?.deviceHitRate.toFixed(3)}, ${mib(t.sparse?.pcieBytesPerStep)} MiB/step PCIe; SDPA ${ms(c.sdpa?.best?.ms)}${t.speedup ? ` -> ${t.speedup.toFixed(2)}x` : ''}`);
  }
}

/** Per context: the prompt's value chunks, and how many pack (the prompt is the same at every batch). */
const packedAt = new Map<number, { packed: number; all: number }>();

/** Mode `packed`: the case's drifting steps with the host tier's values packed (lossless), and the share of the prompt's chunks that pack. */
async function packedCase(c: CaseResult, source: PromptSource, prompt: Prompt): Promise<void> {
  const t = await timeRebuilt(c, source, prompt, 'packed', { packedValues: true }, 'packed');
  if (!t) return;
  if (!packedAt.has(c.context)) packedAt.set(c.context, packedChunks(prompt.values, SPEC.kvHeads, SPEC.headDim, SHADOWKV.chunkSize));
  const chunks = packedAt.get(c.context)!;
  c.packed = { ...t, packedShare: chunks.packed / chunks.all, fetchRatio: fetchRatio(chunks) };
  log(`  packed: GPU ${ms(t.gpu_ms)}, ${(100 * c.packed.packedShare).toFixed(1)} % of chunks packed, ${mib((t.sparse?.pcieBytesPerStep ?? 0) * c.packed.fetchRatio)} MiB/step PCIe; SDPA ${ms(c.sdpa?.best?.ms)}${t.speedup ? ` -> ${t.speedup.toFixed(2)}x` : ''}`);
}

interface Fp8Variant {
  label: string;
  hotChunks?: number;
  options: ShadowKVOptions;
}

/** Mode `fp8`: the case's drifting steps with values in fp8 on the host tier, alone and with the first `--hot-chunks` size. */
async function fp8Case(c: CaseResult, source: PromptSource, prompt: Prompt): Promise<void> {
  const hot = args.hotChunks[0];
  const variants: Fp8Variant[] = [
    { label: 'fp8', options: { fp8Values: true } },
    ...(hot ? [{ label: `fp8+hot ${hot}`, hotChunks: hot, options: { fp8Values: true, hotChunks: hot } }] : []),
  ];
  let errors: Record<string, OutputError | Error>;
  try {
    errors = await fp8Errors(c.context, source, prompt, variants);
  } catch (err) {
    return void c.skipped!.push(`fp8: ${(err as Error).message}`);
  }
  for (const { label, hotChunks, options } of variants) {
    const error = errors[label]!;
    if (error instanceof Error) {
      c.skipped!.push(`${label}: ${error.message}`);
      continue;
    }
    if (overBudget()) return void c.skipped!.push(`${label}: time budget spent`);
    const t = await timeRebuilt(c, source, prompt, label, options, 'fp8');
    if (!t) continue;
    (c.fp8 ??= []).push({ label, hotChunks, ...t, outputError: error });
    const decode = c.shadowkv?.sparse?.pcieBytesPerStep;
    const pcie = t.sparse?.pcieBytesPerStep ?? 0;
    log(`  ${label}: GPU ${ms(t.gpu_ms)}, wall ${ms(t.wall_ms)} (${t.steps} steps), hit rate ${t.sparse?.hitRate.toFixed(3)}, ${mib(pcie)} MiB/step PCIe${decode ? ` (${(pcie / decode).toFixed(3)} of decode's)` : ''}; SDPA ${ms(c.sdpa?.best?.ms)}${t.speedup ? ` -> ${t.speedup.toFixed(2)}x` : ''}; output vs bf16 values (1 row, ${error.steps} steps): max |diff| / max |value| ${error.maxRel.toExponential(2)}, mean cos ${error.meanCos.toFixed(6)}`);
  }
}

const FP8_ERROR_STEPS = 8;
const fp8ErrorsAt = new Map<number, Promise<Record<string, OutputError | Error>>>();

/**
 * Mode `fp8`'s output error at context S per variant, or why it could not be built: FP8_ERROR_STEPS
 * drifting steps of the same inputs on a one-row cache with bf16 values, then on one per variant.
 * Once per context (its first case) on one row, each cache disposed before the next is built: every
 * row holds the same prompt, so the error does not depend on the batch, and at 128K it costs a row's
 * build and host values whatever the case's batch.
 */
function fp8Errors(S: number, source: PromptSource, prompt: Prompt, variants: Fp8Variant[]): Promise<Record<string, OutputError | Error>> {
  if (!fp8ErrorsAt.has(S)) {
    fp8ErrorsAt.set(S, phase('fp8', async () => {
      const outputs = async (options: ShadowKVOptions) => {
        const b = await buildCache('shadowkv', backendName, 1, prompt, log, options);
        try {
          return stepOutputs(b.cache, new DriftingQueries(source, 1, S, args.workload.seed), FP8_ERROR_STEPS);
        } finally {
          b.cache.dispose();
        }
      };
      const bf16 = await outputs({});
      const scale = maxAbs(prompt.values.data);
      const errors: Record<string, OutputError | Error> = {};
      for (const { label, options } of variants) {
        try {
          errors[label] = outputError(await outputs(options), bf16, scale);
        } catch (err) {
          errors[label] = err as Error;
        }
      }
      return errors;
    }));
  }
  return fp8ErrorsAt.get(S)!;
}

async function fullCase(c: CaseResult, source: PromptSource, prompt: Prompt): Promise<void> {
  const { context: S, batch: B } = c;
  // The tail grows by an eighth at the first step past the prompt.
  const need = estimateMemory({ spec: SPEC, tokens: S, batch: B, policy: 'full', dtype: 'bf16' }).device * 1.125;
  const free = freeBytes();
  if (free !== undefined && need > 0.9 * free) return void c.skipped!.push(`full: needs ~${(need / GiB).toFixed(1)} GiB, ${(free / GiB).toFixed(1)} GiB free`);
  log(`${S / 1024}K x ${B}: building full (${B} rows)`);
  let built: Built<FullKVCache>;
  try {
    built = await phase('build', () => buildCache('full', backendName, B, prompt, log));
  } catch (err) {
    return void c.skipped!.push(`full: ${(err as Error).message}`);
  }
  try {
    const decode = await phase('full', () => timeDecode(built, new DriftingQueries(source, B, S, args.workload.seed + B), args, inputMode!));
    const sd = c.sdpa?.best?.ms;
    c.full = { build: built.build, decode, ...(sd ? { speedOfSdpa: sd / decode.gpu_ms } : {}) };
    log(`  full: GPU ${ms(decode.gpu_ms)}, wall ${ms(decode.wall_ms)}; SDPA ${ms(sd)}`);
  } finally {
    built.cache.dispose();
  }
}

/** Mode `largest`: the ShadowKV batch allocated for one layer (or why not), and both throughputs. */
function largestResult(c: CaseResult, built: Built<ShadowKVCache> | undefined, error?: string): void {
  const L = plan.largest!;
  const one = estimateMemory({ spec: SPEC, tokens: L.context, batch: Math.max(L.shadowkv, 1), dtype: 'bf16', options: SHADOWKV });
  const dense = sdpaAt(L.context, L.dense)?.best;
  const t = c.shadowkv;
  report.largest = {
    ...L,
    confirmed: { allocated: !!built, ...(error ? { error } : {}), memory: built?.build.memory, estimateOneLayer: { device: one.device, host: one.host }, freeBytesAfter: built ? freeBytes() : undefined },
    hostBytesWholeModel: L.shadowkvEstimate.host,
    throughput: {
      ...(t ? { shadowkv: { batch: L.shadowkv, gpu_ms: t.gpu_ms, tokensPerSecond: L.shadowkv / (t.gpu_ms / 1000) } } : {}),
      ...(dense ? { dense: { batch: L.dense, sdpa_ms: dense.ms, tokensPerSecond: L.dense / (dense.ms / 1000) } } : {}),
    },
  };
  log(`  largest: ShadowKV batch ${L.shadowkv} ${built ? 'allocated' : `NOT allocated (${error})`} (dense fits ${L.dense}); whole-model host memory ${(L.shadowkvEstimate.host / GiB).toFixed(0)} GiB`);
}

/**
 * Mode `prefill`: compress() per row of the context's builds; a PREFILL_ROWS-row cache when they
 * gave fewer warm samples. NOTE: with 5 warm rows two runs of the same code read 22.6 and 28.6 ms
 * at 128K (H200, the machine's host noise): the median needs more.
 */
const PREFILL_ROWS = 16;

async function prefillResult(S: number, prompt: Prompt): Promise<void> {
  if ((compressSamples.get(S)?.rest.length ?? 0) < PREFILL_ROWS - 1 && !overBudget()) {
    log(`${S / 1024}K: compress() timing on ${PREFILL_ROWS} rows`);
    try {
      const b = await phase('prefill', () => buildCache('shadowkv', backendName, PREFILL_ROWS, prompt, log));
      noteBuild(S, b);
      b.cache.dispose();
    } catch (err) {
      report.skipped.push(`prefill ${S}: ${(err as Error).message}`);
    }
  }
  const s = compressSamples.get(S);
  if (!s) return;
  report.prefill.push({ context: S, compress_ms: summary(s.rest.length ? s.rest : s.first), firstRow_ms: s.first, sdpaCausal: sdpa?.prefill.find((p) => p.context === S) });
  log(`${S / 1024}K: compress ${ms(summary(s.rest.length ? s.rest : s.first).median)} per row; SDPA causal prefill ${ms(sdpa?.prefill.find((p) => p.context === S)?.best?.ms)}`);
}

// ------------------------------------------------------------------------------------------------
// Every context, the longest first

const scratch = backend.createDevice();
const longest = plan.contexts[0] ?? 0;
log(`generating the prompt: ${longest} tokens x ${SPEC.kvHeads} kv heads (once; shorter contexts take its prefix)`);
const source = await phase('prompt', () => new PromptSource(SPEC, longest, args.workload, scratch));
scratch.dispose();
for (const S of plan.contexts) {
  const prompt = await phase('prompt', () => source.prompt(S));
  const batches = [...plan.batches[S]!];
  if (plan.largest?.context === S && !batches.includes(plan.largest.shadowkv) && plan.largest.shadowkv > 0) batches.push(plan.largest.shadowkv);
  for (const B of batches) {
    const c: CaseResult = { context: S, batch: B, denseKvBytes: B * S * SPEC.kvHeads * SPEC.headDim * 2 * 2, sdpa: sdpaAt(S, B), skipped: [] };
    report.cases.push(c);
    if (overBudget()) {
      c.skipped!.push(`time budget (${args.budgetSeconds} s) spent`);
      continue;
    }
    await shadowCase(c, source, prompt);
    if (has('packed') && plan.batches[S]!.includes(B) && !overBudget()) await packedCase(c, source, prompt);
    if (has('hot') && plan.batches[S]!.includes(B) && !overBudget()) await hotCase(c, source, prompt);
    if (has('full') && plan.batches[S]!.includes(B) && !overBudget()) await fullCase(c, source, prompt);
    // After full: fp8 is past the issue's targets, so a spent budget takes it first.
    if (has('fp8') && plan.batches[S]!.includes(B) && !overBudget()) await fp8Case(c, source, prompt);
    save();
  }
  if (has('prefill')) await prefillResult(S, prompt);
  save();
}

log(`phases: ${Object.entries(report.phases).map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(', ')}; total ${elapsed().toFixed(1)} s`);
save();
for (const line of targetLines(report.targets)) console.log(line);
log(`wrote ${jsonPath} and ${svgPath}`);
