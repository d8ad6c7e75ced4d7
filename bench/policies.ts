// The built-in policies (and the example plugin) against full attention at equal numbers of
// attended tokens, on the synthetic needle workload: output agreement, needle selection, answers.
// Run: npx tsx bench/policies.ts  (wasm, f32 storage; writes bench/results/policies.json and .md)
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { execSync } from 'node:child_process';
import { createCache, toFloat32, type Cache, type Tensor } from '../packages/shadowkv/src/backend.js';
import { cosine } from '../examples/workloads/metrics.js';
import { NeedleWorkload } from '../examples/workloads/needle.js';
import { registerLandmarkWindow } from '../examples/custom-policy/LandmarkWindowCache.js';
import { cli } from '../examples/cli.js';

cli('bench/policies', 'the policies against full attention at equal attended tokens; writes bench/results/policies.json and .md', {});
registerLandmarkWindow();
const spec = { layers: 1, queryHeads: 16, kvHeads: 4, headDim: 64, rope: { theta: 500000 } };
const { queryHeads: Hq, kvHeads: Hkv, headDim: d } = spec;
const g = Hq / Hkv;
const TOKENS = 8192;
const QUESTION = 32; // the prompt's last tokens: queries that look for the needle (SnapKV's observation window)
const STEPS = 16;

/** Per policy: options that attend about `budget` tokens per kv head and step. */
const configs = (budget: number): Record<string, { policy: string; options: object }> => ({
  streaming: { policy: 'streaming', options: { sinkTokens: 4, windowTokens: budget - 4 } },
  quest: { policy: 'quest', options: { budget: budget - 16, chunkSize: 16 } },
  snapkv: { policy: 'snapkv', options: { budget: budget - STEPS / 2, windowTokens: QUESTION } },
  shadowkv: { policy: 'shadowkv', options: { budget: budget - 64 - 32, outlierChunks: 8, localTokens: 32, rank: 64, denseThreshold: 1024 } },
  'landmark-window (example plugin)': { policy: 'landmark-window', options: { budget: budget - 64, recentTokens: 64 } },
});

/** Whether head h of row 0 attended the needle's tokens at the last step (how each policy says what it kept). */
function sawNeedle(name: string, cache: Cache, h: number, work: NeedleWorkload): boolean {
  const c = cache as unknown as Record<string, (...a: number[]) => number[]> & { states: { tail: { count: number; position(h: number, r: number): number } }[][] };
  if (name === 'quest') return c.selection!(0, 0, h).includes(work.needleChunk(16)) || false;
  if (name.startsWith('landmark-window')) return c.selection!(0, 0, h).includes(work.needleChunk(8));
  if (name === 'shadowkv') {
    return c.selection!(0, 0, h).includes(work.needleChunk(8)) || outliers(cache, h).includes(work.needleChunk(8));
  }
  // Eviction policies: the needle's tokens are among the rows the row holds.
  const { tail } = c.states[0]![0]!;
  for (let r = 0; r < tail.count; r++) if (tail.position(h, r) === work.needleStart) return true;
  return false;
}

/** ShadowKV's outlier chunks of kv head h (row 0), read through its store's handles. */
function outliers(cache: Cache, h: number): number[] {
  const c = cache as unknown as { device: { read(v: object, n: number): Int32Array }; states: { store?: { outlierIds: object; headCountsNow(): Int32Array; geometry: { maxOutliers: number } } }[][] };
  const store = c.states[0]![0]!.store;
  if (!store) return [];
  const O = store.headCountsNow()[h * 3 + 1]!;
  return Array.from(c.device.read({ buf: store.outlierIds, offset: h * store.geometry.maxOutliers }, O));
}

/** Mean value vector of every chunk of 8 prompt tokens, per kv head: the candidate answers. */
function chunkValues(values: Tensor): Float64Array[][] {
  const v = values.data as Float32Array;
  const chunks = Math.floor(TOKENS / 8);
  return Array.from({ length: Hkv }, (_, h) => Array.from({ length: chunks }, (_, c) => {
    const m = new Float64Array(d);
    for (let t = c * 8; t < c * 8 + 8; t++) for (let i = 0; i < d; i++) m[i]! += v[(h * TOKENS + t) * d + i]! / 8;
    return m;
  }));
}

/** Fraction of query heads whose output is closest (cosine) to the needle chunk's mean value. */
function answers(out: Float32Array, candidates: Float64Array[][], needle: number): number {
  let right = 0;
  for (let j = 0; j < Hq; j++) {
    const o = out.subarray(j * d, (j + 1) * d);
    let best = -1, bestCos = -Infinity;
    candidates[Math.floor(j / g)]!.forEach((m, c) => {
      const s = cosine(o, m);
      if (s > bestCos) [best, bestCos] = [c, s];
    });
    if (best === needle) right += 1;
  }
  return right / Hq;
}

/** The question: QUESTION tokens whose queries look for the needle, as one prefill input. */
function question(work: NeedleWorkload): { keys: Tensor; values: Tensor; queries: Tensor } {
  const steps = Array.from({ length: QUESTION }, () => work.step(0));
  const join = (pick: (s: (typeof steps)[0]) => Tensor, H: number): Tensor => {
    const data = new Float32Array(H * QUESTION * d);
    steps.forEach((s, t) => { for (let h = 0; h < H; h++) data.set((pick(s).data as Float32Array).subarray(h * d, (h + 1) * d), (h * QUESTION + t) * d); });
    return { data, shape: [1, H, QUESTION, d], dtype: 'f32' };
  };
  return { keys: join((s) => s.key, Hkv), values: join((s) => s.value, Hkv), queries: join((s) => s.query, Hq) };
}

interface Row { policy: string; budget: number; focus: number; attended: number; cosineMean: number; cosineWorst: number; needleSelected: number; answerAccuracy: number; deviceMiB: number }
const rows: Row[] = [];
for (const focus of [8, 5]) {
  for (const budget of [256, 1024]) {
    const work = new NeedleWorkload(spec, { tokens: TOKENS, keyRank: 24, noise: 0.05, seed: 11, focus });
    const prompt = work.prompt(0);
    const q = question(work);
    const candidates = chunkValues(prompt.values);
    const needle = work.needleChunk(8);
    const caches: [string, Cache][] = [['full', await createCache({ spec, policy: 'full', dtype: 'f32', backend: 'wasm' })]];
    for (const [name, c] of Object.entries(configs(budget))) caches.push([name, await createCache({ spec, policy: c.policy, dtype: 'f32', backend: 'wasm', options: c.options } as never)]);
    for (const [, c] of caches) {
      c.prefill(0, prompt);
      c.prefill(0, q);
    }
    const acc = caches.map(() => ({ cos: [] as number[], attended: 0, needle: 0, answer: 0 }));
    for (let t = 0; t < STEPS; t++) {
      const input = work.step(0);
      const outs = caches.map(([, c]) => toFloat32(c.decode(0, input)) as Float32Array);
      caches.forEach(([name, c], i) => {
        const a = acc[i]!;
        a.cos.push(cosine(outs[i]!, outs[0]!));
        a.attended += c.stats().lastAttendedTokens / STEPS;
        a.answer += answers(outs[i]!, candidates, needle) / STEPS;
        if (name !== 'full') for (let h = 0; h < Hkv; h++) a.needle += (sawNeedle(name, c, h, work) ? 1 : 0) / (STEPS * Hkv);
        else a.needle = 1;
      });
    }
    caches.forEach(([name, c], i) => {
      const a = acc[i]!;
      rows.push({
        policy: name, budget, focus, attended: Math.round(a.attended), cosineMean: a.cos.reduce((x, y) => x + y, 0) / STEPS, cosineWorst: Math.min(...a.cos),
        needleSelected: a.needle, answerAccuracy: a.answer, deviceMiB: c.memory().device / 2 ** 20,
      });
      console.log(`focus ${focus} budget ${budget} ${name.padEnd(34)} attended ${Math.round(a.attended).toString().padStart(5)}  cosine ${rows.at(-1)!.cosineMean.toFixed(4)} (worst ${rows.at(-1)!.cosineWorst.toFixed(4)})  needle ${a.needle.toFixed(2)}  answers ${a.answer.toFixed(2)}`);
      c.dispose();
    });
  }
}

const commit = execSync('git rev-parse --short HEAD').toString().trim();
const machine = `${os.cpus()[0]?.model ?? 'cpu'}, ${os.cpus().length} vCPUs, Node ${process.version}`;
const workload = `synthetic needle (examples/workloads/needle.ts): ${TOKENS} prompt tokens + a ${QUESTION}-token question whose queries look for the needle (prefilled with queries), then ${STEPS} decode steps; 1 layer, 16 query / 4 kv heads, d 64, keys of rank 24 + noise 0.05, needle at 37 %, seed 11`;
writeFileSync('bench/results/policies.json', JSON.stringify({ date: new Date().toISOString(), commit, machine, command: 'npx tsx bench/policies.ts', backend: 'wasm', dtype: 'f32', workload, configs: { 256: configs(256), 1024: configs(1024) }, rows }, null, 2) + '\n');
const md = [
  `# Policies at equal attended tokens (wasm, f32)`,
  '',
  `\`npx tsx bench/policies.ts\`, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, commit ${commit}, ${machine}. Workload: ${workload}.`,
  '',
  'Attended: tokens per kv head per step (mean). Cosine: output against `full`, per step over all heads (mean / worst). Needle: share of (step, kv head) whose attended tokens include the needle. Answers: share of (step, query head) outputs closest (cosine) to the needle chunk\'s mean value among all 1024 chunks.',
  '',
  '| focus | budget | policy | attended | cosine mean / worst | needle | answers | device MiB |',
  '|---:|---:|---|---:|---:|---:|---:|---:|',
  ...rows.map((r) => `| ${r.focus} | ${r.budget} | ${r.policy} | ${r.attended} | ${r.cosineMean.toFixed(4)} / ${r.cosineWorst.toFixed(4)} | ${r.needleSelected.toFixed(2)} | ${r.answerAccuracy.toFixed(2)} | ${r.deviceMiB.toFixed(1)} |`),
  '',
].join('\n');
writeFileSync('bench/results/policies.md', md);
