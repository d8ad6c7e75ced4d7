// PARITY (issue 7): the same inputs through two backends, op by op and through whole caches, for
// every storage dtype; writes how far they agree as JSON and prints one summary line per dtype.
//   npx tsx bench/parity.ts <out.json> [--backends wasm,cuda] [--dtypes f32,f16,bf16]
// The first backend is the reference: `rel` is ||cand - ref|| / ||ref||, `maxAbs` is max |cand - ref|.
// `--backends wasm,wasm-plain` compares the SIMD and plain wasm builds, so it runs without a GPU.
// The JSON: date, machine, node, commit, the two backends, then per dtype (`f32`, `f16`, `bf16`)
// { tolerance, checks, summary, ops: [one entry per case], endToEnd: [one per scenario and policy] }.
// On the GPU machine: bash scripts/gpu/parity.sh (writes $OUT/parity.json and $OUT/parity.log).
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import {
  createCache, createWasmBackend, registerBackend, resolveBackend, type Backend, type DType, type ShadowKVCache,
} from '../packages/shadowkv/src/backend.js';
import { checkShadowKVDtype } from '../packages/shadowkv/src/config.js';
import { scenarioSteps } from '../test/conformance/scenarioInputs.js';
import { SCENARIOS, type Scenario } from '../test/conformance/scenarios.js';
import { f64, relError } from '../test/helpers/data.js';
import { shadowKVOracle } from '../test/conformance/runScenario.js';
import { OracleFullKV, OracleShadowKV } from '../test/oracle/index.js';
import { opCases, type OpCase, type Outputs } from './parityOps.js';
import { cli, refuse } from '../examples/cli.js';

// ------------------------------------------------------------------------------------------------
// Arguments and backends

const flags = cli('bench/parity', 'the same inputs through two backends, op by op and through whole caches', {
  out: { kind: 'arg', doc: 'the JSON to write' },
  backends: { kind: 'choices', default: ['wasm', 'cuda'], of: ['wasm', 'wasm-plain', 'cuda'], doc: 'the reference, then the candidate' },
  dtypes: { kind: 'choices', default: ['f32', 'f16', 'bf16'], of: ['f32', 'f16', 'bf16'], doc: 'storage dtypes' },
});
const outPath = flags.out;
const [refName, candName] = flags.backends as [string, string];
if (flags.backends.length !== 2) refuse('bench/parity', `--backends takes two names, the reference and the candidate, got '${flags.backends.join(',')}'`);
const dtypes = flags.dtypes as DType[];
registerBackend('wasm-plain', () => createWasmBackend({ variant: 'plain' }), 0);

const t0 = performance.now();
const log = (line: string) => console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${line}`);

/** The backend by name, or exit saying why it cannot start (e.g. no CUDA device here). */
async function start(name: string): Promise<Backend> {
  try {
    return (await resolveBackend(name)).backend;
  } catch (err) {
    console.error(`parity: the ${name} backend cannot start, so there is nothing to compare: ${(err as Error).message}`);
    process.exit(1);
  }
}

// ------------------------------------------------------------------------------------------------
// Per op

interface Diff {
  n: number;
  /** Over finite pairs; non-finite ones count only in `bitExact`. */
  maxAbs: number;
  rel: number;
  bitExact: boolean;
}

function diff(cand: Float64Array, ref: Float64Array): Diff {
  let maxAbs = 0, num = 0, den = 0, bitExact = cand.length === ref.length;
  for (let i = 0; i < ref.length; i++) {
    const [a, b] = [cand[i]!, ref[i]!];
    if (!Object.is(a, b)) bitExact = false; // -0 vs 0 and NaN vs NaN as bits would
    if (!Number.isFinite(a) || !Number.isFinite(b)) continue;
    maxAbs = Math.max(maxAbs, Math.abs(a - b));
    num += (a - b) ** 2;
    den += b * b;
  }
  return { n: ref.length, maxAbs, rel: Math.sqrt(num / Math.max(den, 1e-300)), bitExact };
}

/** Runs a case on a fresh device of the backend (freed after), so cases do not share memory. */
function runOn(backend: Backend, c: OpCase): Outputs {
  const device = backend.createDevice();
  try {
    return c.run(device);
  } finally {
    device.dispose();
  }
}

function runOps(dtype: DType, ref: Backend, cand: Backend) {
  return opCases(dtype).map((make) => {
    const c = make();
    let r: Outputs, k: Outputs;
    try {
      [r, k] = [runOn(ref, c), runOn(cand, c)];
    } catch (err) {
      // One failing case (say, an input a kernel rejects) is reported, not the end of the run.
      log(`${dtype} ${c.op}: ${c.name}: FAILED: ${(err as Error).message}`);
      return { op: c.op, case: c.name, expectExact: c.exact ?? false, bitExact: false, rel: NaN, error: String((err as Error).message) };
    }
    const outputs = Object.fromEntries((c.elementwise ?? Object.keys(r)).map((name) => [name, diff(k[name]!, r[name]!)]));
    const bitExact = Object.values(outputs).every((o) => o.bitExact);
    const rel = Math.max(...Object.values(outputs).map((o) => o.rel));
    const result = { op: c.op, case: c.name, expectExact: c.exact ?? false, bitExact, rel, outputs, ...c.compare?.(r, k) };
    log(`${dtype} ${c.op}: ${c.name}: ${bitExact ? 'bit-exact' : `rel ${rel.toExponential(2)}`}${c.exact && !bitExact ? '  <-- expected bit-exact' : ''}`);
    return result;
  });
}

// ------------------------------------------------------------------------------------------------
// End to end: every conformance scenario through a cache of each backend and the float64 oracle

const sameSet = (a: number[], b: number[]) => a.length === b.length && a.every((x) => b.includes(x));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const summary = (xs: number[]) => ({ max: Math.max(0, ...xs), median: median(xs) });

type Pair = 'candVsRef' | 'refVsOracle' | 'candVsOracle';
const PAIRS: Pair[] = ['candVsRef', 'refVsOracle', 'candVsOracle'];

/**
 * ShadowKV's host-tier formats: fp8 (fp8Values; the oracle's stored chunks as the fp8 tier returns
 * them) and packed (packedValues, bf16 only; lossless, so the oracle is the plain tier's).
 */
const TIERS = { plain: {}, fp8: { fp8Values: true }, packed: { packedValues: true } } as const;
type Tier = keyof typeof TIERS;
const labelOf = (policy: string, tier: Tier) => (tier === 'plain' ? policy : `${policy}+${tier}`);
/** The tiers a cache of this dtype may have (checkShadowKVDtype's rule, as createCache applies it). */
const tiersOf = (dtype: DType) => (Object.keys(TIERS) as Tier[]).filter((tier) => {
  try {
    checkShadowKVDtype({ packedValues: false, ...TIERS[tier] }, dtype);
    return true;
  } catch {
    return false;
  }
});
const runsOf = (dtype: DType) => [...tiersOf(dtype).map((tier) => ['shadowkv', tier] as const), ['full', 'plain'] as const];

/** A scenario through both backends, shadowkv's host tier in the given format. */
async function endToEnd(sc: Scenario, policy: 'shadowkv' | 'full', dtype: DType, tolerance: number, tier: Tier) {
  const { spec, batch } = sc;
  const options = { ...sc.options, ...TIERS[tier] };
  const { queryHeads: Hq, kvHeads: Hkv, headDim: d, layers } = spec;
  const make = (backend: string) => (policy === 'shadowkv'
    ? createCache({ spec, policy, batch, dtype, backend, options })
    : createCache({ spec, policy, batch, dtype, backend }));
  const caches = [await make(refName!), await make(candName!)];
  const oracles = Array.from({ length: layers }, () => (policy === 'shadowkv' ? shadowKVOracle(sc, options, dtype) : new OracleFullKV(spec, batch)));
  const rowOf = (x: Float64Array, i: number, n: number) => x.subarray(i * n, (i + 1) * n);
  // Per decode call: the whole output's error, and the worst row among rows whose selections agree.
  const whole = { candVsRef: [] as number[], refVsOracle: [] as number[], candVsOracle: [] as number[] };
  const agreeing = { candVsRef: [] as number[], refVsOracle: [] as number[], candVsOracle: [] as number[] };
  const prefill: number[] = [];
  const sel = { sets: 0, identical: 0, differing: 0, nearTies: 0, refMatchesOracle: 0, candMatchesOracle: 0, firstDiffering: [] as object[] };

  /** Each (row, kv head) of a decode step: the two caches' sets, and each against the oracle's; returns the rows where each pair differs. */
  const compareSelections = (step: number, layer: number): Record<Pair, Set<number>> => {
    const off = { candVsRef: new Set<number>(), refVsOracle: new Set<number>(), candVsOracle: new Set<number>() };
    const oracle = oracles[layer] as OracleShadowKV;
    for (let row = 0; row < batch; row++) {
      for (let head = 0; head < Hkv; head++) {
        const [a, b] = caches.map((c) => (c as ShadowKVCache).selection(layer, row, head)) as [number[], number[]];
        const o = oracle.lastSelection(row, head);
        sel.sets += 1;
        if (sameSet(a, o)) sel.refMatchesOracle += 1;
        else off.refVsOracle.add(row);
        if (sameSet(b, o)) sel.candMatchesOracle += 1;
        else off.candVsOracle.add(row);
        if (sameSet(a, b)) {
          sel.identical += 1;
          continue;
        }
        sel.differing += 1;
        off.candVsRef.add(row);
        const onlyRef = a.filter((x) => !b.includes(x)), onlyCand = b.filter((x) => !a.includes(x));
        // NOTE: the caches' own scores are not visible through the API; the oracle's are. A differing
        // chunk is a near-tie when its oracle score is within 4x the tolerance of the k-th best.
        const scores = oracle.lastScores(row, head);
        const kth = Math.min(...o.map((x) => scores.get(x)!));
        const gap = o.length ? Math.max(...[...onlyRef, ...onlyCand].map((x) => (scores.has(x) ? Math.abs(scores.get(x)! - kth) / kth : Infinity))) : null;
        if (gap !== null && gap <= 4 * tolerance) sel.nearTies += 1;
        if (sel.firstDiffering.length < 10) sel.firstDiffering.push({ step, layer, row, head, onlyRef, onlyCand, oracleGap: gap });
      }
    }
    return off;
  };

  let decodes = 0;
  try {
    for (const ev of scenarioSteps(sc, dtype)) {
      if (ev.kind === 'reset') {
        caches.forEach((c) => c.reset(ev.sequence));
        oracles.forEach((o) => o.reset(ev.sequence));
      } else if (ev.kind === 'prefill') {
        const { layer: l, sequences, tokens: S, keys, values, queries } = ev;
        const [a, b] = caches.map((c) => c.prefill(l, { keys: keys.t, values: values.t, queries: queries?.t, sequences }));
        sequences.forEach((s, i) => oracles[l]!.prefill(s, rowOf(keys.f64, i, Hkv * S * d), rowOf(values.f64, i, Hkv * S * d), S, queries && rowOf(queries.f64, i, Hq * S * d)));
        if (a && b) prefill.push(relError(f64(b), f64(a)));
      } else {
        const { layer: l, query, key, value } = ev;
        const [a, b] = caches.map((c) => f64(c.decode(l, { query: query.t, key: key.t, value: value.t }))) as [Float64Array, Float64Array];
        const want = oracles[l]!.decode(query.f64, key.f64, value.f64);
        const off = policy === 'shadowkv' ? compareSelections(ev.step, l) : undefined;
        const n = Hq * d;
        for (const [pair, x, y] of [['candVsRef', b, a], ['refVsOracle', a, want], ['candVsOracle', b, want]] as const) {
          whole[pair].push(relError(x, y));
          const rows = Array.from({ length: batch }, (_, r) => r).filter((r) => !off?.[pair].has(r));
          if (rows.length) agreeing[pair].push(Math.max(...rows.map((r) => relError(rowOf(x, r, n), rowOf(y, r, n)))));
        }
        decodes += 1;
      }
    }
  } finally {
    caches.forEach((c) => c.dispose());
  }
  const output = {
    ...Object.fromEntries(PAIRS.map((p) => [p, summary(whole[p])])) as Record<Pair, ReturnType<typeof summary>>,
    agreeingRows: Object.fromEntries(PAIRS.map((p) => [p, summary(agreeing[p])])) as Record<Pair, ReturnType<typeof summary>>,
    prefillCandVsRef: summary(prefill),
  };
  const label = labelOf(policy, tier);
  const result = { scenario: sc.name, policy: label, decodeCalls: decodes, output, ...(policy === 'shadowkv' ? { selection: sel } : {}) };
  const e = (x: number) => x.toExponential(2);
  log(`${dtype} ${label}: ${sc.name}: ${policy === 'shadowkv' ? `sets ${sel.identical}/${sel.sets} identical (${sel.nearTies} of ${sel.differing} differing are near-ties), ` : ''}`
    + `output rel max ${e(output.candVsRef.max)} (agreeing rows ${e(output.agreeingRows.candVsRef.max)}); `
    + `vs oracle, agreeing rows: ${refName} ${e(output.agreeingRows.refVsOracle.max)}, ${candName} ${e(output.agreeingRows.candVsOracle.max)}`);
  return result;
}

/** The pass/fail facts and the one line printed for a dtype. */
function summarize(dtype: DType, ops: ReturnType<typeof runOps>, runs: Awaited<ReturnType<typeof endToEnd>>[], runsFailed: number) {
  const e = (x: number) => x.toExponential(2);
  const shouldBeExact = ops.filter((o) => o.expectExact);
  const failed = [...new Set(ops.filter((o) => 'error' in o).map((o) => o.op))];
  const worst = ops.filter((o) => !o.bitExact && !('error' in o)).sort((a, b) => b.rel - a.rel)[0];
  const sets = runs.flatMap((r) => (r.selection ? [r.selection] : []));
  const total = (k: 'sets' | 'identical' | 'differing' | 'nearTies') => sets.reduce((s, x) => s + x[k], 0);
  const worstOf = (k: Pair) => Math.max(...runs.map((r) => r.output.agreeingRows[k].max));
  const checks = {
    nothingFailed: failed.length + runsFailed === 0,
    exactOpsBitExact: shouldBeExact.every((o) => o.bitExact),
    selectionsDifferOnlyAtNearTies: total('nearTies') === total('differing'),
  };
  const line = `${dtype}: ops ${failed.length ? `FAILED: ${failed.join(', ')}; ` : ''}${shouldBeExact.filter((o) => o.bitExact).length}/${shouldBeExact.length} exact cases bit-exact, `
    + `${ops.filter((o) => o.bitExact).length}/${ops.length} cases bit-exact, worst rel ${worst ? `${e(worst.rel)} (${worst.op}: ${worst.case})` : '0'}; `
    + `e2e ${runsFailed ? `${runsFailed} runs FAILED, ` : ''}sets ${total('identical')}/${total('sets')} identical, ${total('nearTies')}/${total('differing')} differing are near-ties; `
    + `output rel max (agreeing rows) ${e(worstOf('candVsRef'))}, vs oracle ${refName} ${e(worstOf('refVsOracle'))} ${candName} ${e(worstOf('candVsOracle'))}`;
  return { checks, line };
}

// ------------------------------------------------------------------------------------------------
// Run, summarize, write

const [ref, cand] = [await start(refName), await start(candName)];
log(`reference ${ref.description}; candidate ${cand.description}`);
const git = (...a: string[]) => {
  try {
    return execFileSync('git', a, { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return undefined;
  }
};
const head = git('rev-parse', 'HEAD');
const card = [ref, cand].map((b) => /^cuda \(([^,]+)/.exec(b.description)?.[1]).find(Boolean);
const report: Record<string, unknown> = {
  date: new Date().toISOString(),
  machine: card ?? os.cpus()[0]?.model,
  cpu: { model: os.cpus()[0]?.model, cores: os.cpus().length },
  node: process.version,
  // NOTE: the packed commit first: the GPU machine's copy of the tree can carry a stale .git.
  commit: process.env.PARITY_COMMIT ?? head ?? null,
  dirty: !process.env.PARITY_COMMIT && head ? git('status', '--porcelain') !== '' : null,
  command: `npx tsx bench/parity.ts ${process.argv.slice(2).join(' ')}`,
  backends: { reference: { name: refName, description: ref.description }, candidate: { name: candName, description: cand.description } },
  metrics: 'ops: rel = ||cand - ref|| / ||ref|| over a whole output, maxAbs = max |cand - ref|. endToEnd: rel per decode call (step x layer), '
    + 'max and median over calls, of the whole output and (agreeingRows) of the worst row among rows whose selections agree for that pair; '
    + 'a differing set is a near-tie when every chunk in the symmetric difference has an oracle score within 4 x tolerance of the oracle\'s k-th best',
};
const lines: string[] = [];
for (const dtype of dtypes) {
  const tolerance = Math.max(ref.precision[dtype], cand.precision[dtype]);
  const ops = runOps(dtype, ref, cand);
  const endToEndRuns: Awaited<ReturnType<typeof endToEnd>>[] = [];
  const endToEndFailed: { scenario: string; policy: string; error: string }[] = [];
  const runs = runsOf(dtype);
  for (const sc of SCENARIOS) {
    for (const [policy, tier] of runs) {
      try {
        endToEndRuns.push(await endToEnd(sc, policy, dtype, tolerance, tier));
      } catch (err) {
        const label = labelOf(policy, tier);
        log(`${dtype} ${label}: ${sc.name}: FAILED: ${(err as Error).message}`);
        endToEndFailed.push({ scenario: sc.name, policy: label, error: String((err as Error).message) });
      }
    }
  }
  const { checks, line } = summarize(dtype, ops, endToEndRuns, endToEndFailed.length);
  report[dtype] = { tolerance, checks, summary: line, ops, endToEnd: endToEndRuns, ...(endToEndFailed.length ? { endToEndFailed } : {}) };
  lines.push(line);
}
report.seconds = Math.round((performance.now() - t0) / 100) / 10;
writeFileSync(outPath, `${JSON.stringify(report, null, 1)}\n`);
console.log(`\nparity ${refName} vs ${candName} (${report.machine}), written to ${outPath}:`);
for (const line of lines) console.log(`  ${line}`);
