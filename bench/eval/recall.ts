// Where ShadowKV's selection loses attention: for retrieval prompts answered with the right answer
// fed back (teacher forcing), every decode step and layer, the share of each query head's exact
// attention (float64, over every key the step could see) that falls on the tokens the step attended
// (selected chunks, outlier chunks, the exact tail), against an oracle that picks the same number of
// chunks by their exact attention (the kv group's max). A low oracle share says the budget cannot hold
// the head's attention; a low ShadowKV share under a high oracle share says the landmarks chose badly.
//   npx tsx bench/eval/recall.ts [--model models/skv-small] [--task kv_lookup] [--length 4096]
//     [--samples 4] [--start 0] [--budget 0.015625] [--set chunkSize=4,...: options over the fit's] [--backend wasm]
//     [--estimators <layer>: other chunk scorers compared on that layer's heads]
import { LlamaModel } from '../../packages/llama/src/index.js';
import { createCache, ropeFrequencies, type DecodeInput, type DecodeOptions, type KVCachePolicy } from '../../packages/shadowkv/src/index.js';
import { at } from '../../packages/shadowkv/src/backends/Device.js';
import { svd } from '../../test/oracle/linalg.js';
import { ropeVector } from '../../test/oracle/rope.js';
import { cli, refuse } from '../../examples/cli.js';
import { encodeSample, intercept, parseVariant, policyRuns, prefillOnce, replayPrefill } from './evaluate.js';
import { drawSample, TASK_NAMES } from './tasks.js';

const a = cli('bench/eval/recall', "where ShadowKV's selection loses attention, per layer, against an oracle selection", {
  model: { kind: 'string', default: 'models/skv-small', doc: 'a model folder' },
  task: { kind: 'choice', default: 'kv_lookup', of: TASK_NAMES, doc: 'the prompts' },
  length: { kind: 'int', default: 4096, min: 128, max: 1 << 20, doc: 'prompt tokens' },
  samples: { kind: 'int', default: 4, min: 1, max: 100_000, doc: 'prompts' },
  start: { kind: 'int', default: 0, min: 0, max: 2 ** 31 - 1, doc: 'the first sample' },
  budget: { kind: 'number', default: 0.015625, min: 1e-4, max: 1, doc: 'the budget, a share of the context' },
  estimators: { kind: 'int', min: 0, max: 1023, doc: "a layer whose heads compare other chunk scorers" },
  set: { kind: 'string', default: '', doc: "options over the fit's, e.g. chunkSize=4,outlierChunks=8" },
  backend: { kind: 'choice', default: 'wasm', of: ['wasm', 'cuda', 'auto'], doc: 'the caches and the projections' },
});
let overrides: Record<string, number> = {};
try {
  overrides = parseVariant(['shadowkv', ...a.set.split(',').filter(Boolean)].join(':')).overrides;
} catch (err) {
  refuse('bench/eval/recall', `--set ${a.set}: ${(err as Error).message.replace(/^.*?: '/, "'")}`);
}
const model = await LlamaModel.load(a.model, { backend: a.backend });
const spec = model.spec;
const { layers: L, queryHeads: Hq, kvHeads: Hkv, headDim: d } = spec;
const g = Hq / Hkv;
const scale = spec.scale ?? 1 / Math.sqrt(d);
const invFreq = ropeFrequencies(d, spec.rope);
const style = spec.rope.style ?? 'half';

interface LayerTally { steps: number; shadow: number; oracle: number; minShadow: number; topMissed: number }
const tally = (): LayerTally[] => Array.from({ length: L }, () => ({ steps: 0, shadow: 0, oracle: 0, minShadow: 0, topMissed: 0 }));
const all = { right: tally(), wrong: tally() };
const estimatorShares: Record<string, number[]> = {};
const estimatorLayer = a.estimators ?? -1;
if (estimatorLayer >= L) refuse('bench/eval/recall', `--estimators ${estimatorLayer}: the model has layers 0-${L - 1}`);

for (let index = a.start; index < a.start + a.samples; index++) {
  const { ids, want } = encodeSample(drawSample(a.task, a.length, index));
  const maxTokens = ids.length + want.length;
  const run = policyRuns(model, ['shadowkv'], [a.budget], ids.length, want.length)[0]!;
  const options = { ...run.options, ...overrides };
  const C = options.chunkSize as number;
  const shared = await prefillOnce(model, ids, { backend: a.backend, maxTokens, withQueries: estimatorLayer >= 0 });
  // Every layer's keys per kv head, RoPE'd at their positions, float64: the prompt's, then each step's.
  const keys: Float64Array[][][] = Array.from({ length: L }, () => Array.from({ length: Hkv }, () => []));
  const rope = (x: ArrayLike<number>, off: number, pos: number) => ropeVector(Float64Array.from({ length: d }, (_, i) => x[off + i]!), pos, invFreq, style);
  for (const c of shared.calls) {
    const T = c.keys.shape[2]!;
    for (let h = 0; h < Hkv; h++) {
      const list = keys[c.layer]![h]!;
      for (let t = 0; t < T; t++) list.push(rope(c.keys.data as Float32Array, (h * T + t) * d, list.length));
    }
  }
  // The prompt's queries of the compared layer per kv head (its group's heads), RoPE'd: for the query-aware sketch.
  const promptQueries: Float64Array[][] = Array.from({ length: Hkv }, () => []);
  let at0 = 0;
  for (const c of shared.calls.filter((c) => c.layer === estimatorLayer && c.queries)) {
    const T = c.queries!.shape[2]!;
    for (let j = 0; j < Hq; j++) for (let t = 0; t < T; t++) promptQueries[Math.floor(j / g)]!.push(rope(c.queries!.data as Float32Array, (j * T + t) * d, at0 + t));
    at0 += T;
  }
  const cache = await createCache({ spec, policy: 'shadowkv', backend: a.backend, maxTokens, options: options as never });
  replayPrefill(cache, 'shadowkv', shared);
  const steps: { layer: number; shadow: number[]; oracle: number[]; topMissed: boolean }[][] = [];
  let current: (typeof steps)[number] = [];
  const tapped: KVCachePolicy = intercept(cache, 'decode', (layer: number, input: DecodeInput, o?: DecodeOptions) => {
    const out = cache.decode(layer, input, o);
    const pos = keys[layer]![0]!.length;
    for (let h = 0; h < Hkv; h++) keys[layer]![h]!.push(rope(input.key.data as Float32Array, h * d, pos));
    // The tokens this step attended, per kv head. NOTE: the compressed length and the outlier ids are
    // not public (only `selection()` is): read from the cache's state, for this diagnosis only.
    const store = (cache as unknown as { states: { store?: { tokens: number; headCountsNow(): Int32Array; outlierIds: unknown; geometry: { maxOutliers: number } } }[][] }).states[layer]![0]!.store!;
    const nc = store.tokens;
    const counts = store.headCountsNow();
    const dev = (cache as unknown as { device: { read(b: unknown, n: number): Int32Array } }).device;
    const shadow: number[] = [], oracle: number[] = [];
    let topMissed = false;
    const qsOf = (kv: number) => Array.from({ length: g }, (_, j) => rope(input.query.data as Float32Array, (kv * g + j) * d, pos));
    for (let h = 0; h < Hkv; h++) {
      const selected = cache.selection(layer, 0, h);
      const outliers = Array.from(dev.read(at(store.outlierIds as never, h * store.geometry.maxOutliers), counts[h * 3 + 1]!));
      const chosen = new Set([...selected, ...outliers]);
      const ks = keys[layer]![h]!;
      const qs = qsOf(h);
      const probs = qs.map((q) => softmax(ks.map((k) => dot(q, k) * scale)));
      const attended = (t: number, set: Set<number>) => t >= nc || set.has(Math.floor(t / C));
      // The oracle: the same number of chunks (outliers kept), by the group's max exact mass.
      const mass = new Map<number, number>();
      for (let c = 0; c < nc / C; c++) {
        if (outliers.includes(c)) continue;
        let best = 0;
        for (const p of probs) { let s = 0; for (let t = c * C; t < (c + 1) * C; t++) s += p[t]!; best = Math.max(best, s); }
        mass.set(c, best);
      }
      const top = new Set([...[...mass.entries()].sort((x, y) => y[1] - x[1]).slice(0, selected.length).map(([c]) => c), ...outliers]);
      if (layer === estimatorLayer) compareEstimators(ks, nc, C, qs, probs, outliers, selected.length * C, promptQueries[h]!);
      for (const p of probs) {
        shadow.push(p.reduce((s, x, t) => s + (attended(t, chosen) ? x : 0), 0));
        oracle.push(p.reduce((s, x, t) => s + (attended(t, top) ? x : 0), 0));
        const argmax = p.indexOf(Math.max(...p));
        if (!attended(argmax, chosen)) topMissed = true;
      }
    }
    current.push({ layer, shadow, oracle, topMissed });
    return out;
  });
  // Teacher forcing: the right answer fed back; each step's greedy choice tells whether it was right.
  const rightAt: boolean[] = [];
  for (let i = 1; i < want.length; i++) {
    current = [];
    const logits = model.forward([want[i - 1]!], tapped);
    rightAt.push(logits.indexOf(Math.max(...logits)) === want[i]);
    steps.push(current);
  }
  cache.dispose();
  const line = steps.map((s, i) => `${rightAt[i] ? '.' : 'X'}`).join('');
  console.log(`#${index} steps ${line} (X: the greedy token differs from the answer's)`);
  steps.forEach((s, i) => {
    const t = rightAt[i] ? all.right : all.wrong;
    for (const r of s) {
      const x = t[r.layer]!;
      x.steps++;
      x.shadow += r.shadow.reduce((u, v) => u + v, 0) / r.shadow.length;
      x.oracle += r.oracle.reduce((u, v) => u + v, 0) / r.oracle.length;
      x.minShadow += Math.min(...r.shadow);
      if (r.topMissed) x.topMissed++;
    }
    if (!rightAt[i]) console.log(`  step ${i}: ` + s.map((r) => `L${r.layer} ${fmt(Math.min(...r.shadow))}/${fmt(Math.min(...r.oracle))}${r.topMissed ? '*' : ''}`).join('  '));
  });
}

function fmt(x: number): string { return x.toFixed(2); }

for (const [name, t] of Object.entries(all)) {
  console.log(`\nsteps the model got ${name} (per layer: mean share of exact attention attended by ShadowKV / by the oracle; min over heads; steps whose top token was not attended)`);
  t.forEach((x, l) => x.steps && console.log(`  layer ${l}: ${fmt(x.shadow / x.steps)} / ${fmt(x.oracle / x.steps)}  min ${fmt(x.minShadow / x.steps)}  top missed ${x.topMissed}/${x.steps}`));
}

for (const [name, v] of Object.entries(estimatorShares)) console.log(`estimator ${name}: mean share ${fmt(v.reduce((x, y) => x + y, 0) / v.length)}, heads under 0.5: ${v.filter((x) => x < 0.5).length} of ${v.length}`);

/**
 * Other chunk scorers at the same number of attended tokens (outliers and tail kept): the share of
 * each query head's exact attention they would attend, tallied per scorer. The scorers: chunk means
 * at C, C / 2 and 2 C (the paper's landmark), Quest's per-channel bounds, the chunk's keys on their
 * principal axis, the max over the chunk of each token's logit (exact, and through the keys' top-m
 * principal directions: a sketch of m numbers a token).
 */
function compareEstimators(ks: Float64Array[], nc: number, C: number, qs: Float64Array[], probs: number[][], outliers: number[], budgetTokens: number, promptQueries: Float64Array[]): void {
  const chunk = (c: number) => ks.slice(c * C, c * C + C);
  const mean = (t0: number, n: number) => { const m = new Float64Array(d); for (let t = t0; t < t0 + n; t++) for (let i = 0; i < d; i++) m[i]! += ks[t]![i]! / n; return m; };
  const scorers: Record<string, [number, (q: Float64Array, c: number) => number]> = {};
  for (const cs of [C / 2, C, C * 2].filter((x) => Number.isInteger(x) && x >= 1)) {
    const lm = Array.from({ length: nc / cs }, (_, c) => mean(c * cs, cs));
    scorers[`mean${cs}`] = [cs, (q, c) => dot(q, lm[c]!)];
  }
  const lo = Array.from({ length: nc / C }, (_, c) => Float64Array.from({ length: d }, (_, i) => Math.min(...chunk(c).map((k) => k[i]!))));
  const hi = Array.from({ length: nc / C }, (_, c) => Float64Array.from({ length: d }, (_, i) => Math.max(...chunk(c).map((k) => k[i]!))));
  scorers[`quest${C}`] = [C, (q, c) => { let x = 0; for (let i = 0; i < d; i++) x += Math.max(q[i]! * lo[c]![i]!, q[i]! * hi[c]![i]!); return x; }];
  scorers[`max${C}`] = [C, (q, c) => Math.max(...chunk(c).map((k) => dot(q, k)))];
  // The chunk's keys on their principal axis: mean + [a_min, a_max] times a unit direction.
  const seg = Array.from({ length: nc / C }, (_, c) => {
    const m = mean(c * C, C);
    const dev = chunk(c).map((k) => Float64Array.from(k, (x, i) => x - m[i]!));
    const u = principal(dev, 1)[0]!;
    const as = dev.map((v) => dot(u, v));
    return { m, u, amin: Math.min(...as), amax: Math.max(...as) };
  });
  scorers[`segment${C}`] = [C, (q, c) => { const s = seg[c]!; const b = dot(q, s.u); return dot(q, s.m) + Math.max(s.amin * b, s.amax * b); }];
  // The same through the prompt queries' top-m directions (where queries have their energy).
  for (const m of [8, 16]) {
    const P = principal(promptQueries, m);
    const sk = ks.slice(0, nc).map((k) => P.map((p) => dot(p, k)));
    scorers[`qsketch${m}max${C}`] = [C, (q, c) => { const qp = P.map((p) => dot(p, q)); return Math.max(...sk.slice(c * C, c * C + C).map((s) => dot(qp, s))); }];
  }
  for (const m of [4, 8, 16]) {
    const P = principal(ks.slice(0, nc), m);
    const sk = ks.slice(0, nc).map((k) => P.map((p) => dot(p, k)));
    scorers[`sketch${m}max${C}`] = [C, (q, c) => { const qp = P.map((p) => dot(p, q)); return Math.max(...sk.slice(c * C, c * C + C).map((s) => dot(qp, s))); }];
  }
  // Two stages: the top m x (budget chunks) by the chunk means of C (the paper's rule), then among
  // those the max of each token's exact logit (what the keys rebuilt from U . SV give).
  const byMeans = groupScores(qs, nc / C, scorers[`mean${C}`]![1]);
  for (const m of [2, 4, 8]) {
    const cand = new Set(topChunks(byMeans, Math.floor(budgetTokens / C) * m));
    scorers[`two-stage${m}x`] = [C, (q, c) => cand.has(c) ? Math.max(...chunk(c).map((k) => dot(q, k))) : -1e30];
  }
  const outTok = new Set(outliers.flatMap((c) => Array.from({ length: C }, (_, i) => c * C + i)));
  for (const [name, [cs, f]] of Object.entries(scorers)) {
    const order = topChunks(groupScores(qs, nc / cs, f), Math.floor(budgetTokens / cs), (c) => outTok.has(c * cs));
    const tok = new Set([...outTok, ...order.flatMap((c) => Array.from({ length: cs }, (_, i) => c * cs + i))]);
    (estimatorShares[name] ??= []).push(...probs.map((p) => p.reduce((s, x, t) => s + (t >= nc || tok.has(t) ? x : 0), 0)));
  }
}

/** The top m principal directions (unit) of the rows: their right singular vectors (the oracle's SVD). */
function principal(rows: Float64Array[], m: number): Float64Array[] {
  const n = rows[0]!.length;
  const data = new Float64Array(rows.length * n);
  rows.forEach((r, i) => data.set(r, i * n));
  const { V } = svd({ rows: rows.length, cols: n, data });
  return Array.from({ length: m }, (_, k) => Float64Array.from({ length: n }, (_, i) => V.data[i * V.cols + k]!));
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let x = 0;
  for (let i = 0; i < a.length; i++) x += a[i]! * b[i]!;
  return x;
}

function softmax(s: number[]): number[] {
  const mx = Math.max(...s);
  const e = s.map((x) => Math.exp(x - mx));
  const z = e.reduce((u, v) => u + v, 0);
  return e.map((x) => x / z);
}

/** The paper's chunk scores: each query head's softmax over the chunks' (scaled) logits, the group's max. */
function groupScores(qs: Float64Array[], n: number, logit: (q: Float64Array, c: number) => number): Float64Array {
  const best = new Float64Array(n);
  for (const q of qs) softmax(Array.from({ length: n }, (_, c) => logit(q, c) * scale)).forEach((p, c) => { best[c] = Math.max(best[c]!, p); });
  return best;
}

/** The k best chunks by score, less the skipped ones. */
function topChunks(scores: Float64Array, k: number, skip: (c: number) => boolean = () => false): number[] {
  return [...scores.keys()].filter((c) => !skip(c)).sort((x, y) => scores[y]! - scores[x]!).slice(0, k);
}
