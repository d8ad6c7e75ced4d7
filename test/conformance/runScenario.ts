// Drives a scenario through a real cache and one oracle per layer, reporting every comparison.
import { createCache, type Tensor } from '../../packages/shadowkv/src/index.js';
import type { ShadowKVCache } from '../../packages/shadowkv/src/index.js';
import { OracleFullKV, OracleShadowKV } from '../oracle/index.js';
import type { TestEnv } from '../envs.js';
import { f64, KeyModel, makeTensor, randn, relError, rng } from '../helpers/data.js';
import type { Scenario } from './scenarios.js';

export interface StepReport {
  label: string;
  layer: number;
  /** Worst relative output error over rows whose selections agreed with the oracle's. */
  error: number;
  /** Rows left out of `error` because a near-tie selected a different chunk there. */
  tieRows: number;
  /** Selections differing from the oracle's beyond near-ties: `seq:head:chunk` entries. */
  selectionMismatches: string[];
  /** Selections differing only among near-ties. */
  nearTies: number;
  hits?: { cache: number; oracle: number };
}

/** Row i of a [rows, H, S, d] float64 array. */
const rowOf = (x: Float64Array, i: number, n: number) => x.subarray(i * n, (i + 1) * n);

export async function runScenario(env: TestEnv, sc: Scenario, policy: 'shadowkv' | 'full'): Promise<StepReport[]> {
  const { spec, batch, options } = sc;
  const { queryHeads: Hq, kvHeads: Hkv, headDim: d, layers } = spec;
  const cache = await createCache({ spec, policy, batch, dtype: env.dtype, backend: env.backend, options });
  const oracles = Array.from({ length: layers }, () => (policy === 'shadowkv' ? new OracleShadowKV(spec, options, batch) : new OracleFullKV(spec, batch)));
  const rand = rng(sc.name.length * 7919);
  const keyModels = Array.from({ length: layers }, () => new KeyModel(Hkv, d, sc.keyRank, rand, 0));
  // Queries drift slowly around a per-(layer, row) direction, as consecutive real queries do.
  const qBase = Array.from({ length: layers }, () => Array.from({ length: batch }, () => randn(Hq * d, rand, 1)));
  const reports: StepReport[] = [];
  const dt = env.dtype;

  const compare = (label: string, layer: number, got: Tensor, want: Float64Array, rows: number, checkSelection: boolean) => {
    const n = got.data.length / rows;
    const report: StepReport = { label, layer, error: 0, tieRows: 0, selectionMismatches: [], nearTies: 0 };
    const tied = new Set<number>();
    if (checkSelection && policy === 'shadowkv') {
      const o = oracles[layer] as OracleShadowKV;
      const c = cache as unknown as ShadowKVCache;
      for (let b = 0; b < batch; b++) {
        for (let h = 0; h < Hkv; h++) {
          const mine = new Set(c.selection(layer, b, h));
          const theirs = o.lastSelection(b, h);
          const diff = [...theirs.filter((x) => !mine.has(x)), ...[...mine].filter((x) => !theirs.includes(x))];
          if (!diff.length) continue;
          // Near-tie: the chunk's oracle score is within tolerance of the k-th best score.
          const scores = o.lastScores(b, h);
          const kth = Math.min(...theirs.map((x) => scores.get(x)!));
          for (const x of diff) {
            const s = scores.get(x) ?? -1;
            if (Math.abs(s - kth) <= 4 * env.tolerance * kth) report.nearTies += 1;
            else report.selectionMismatches.push(`${b}:${h}:${x}`);
            tied.add(b);
          }
        }
      }
      report.hits = { cache: c.stats().lastHits, oracle: o.lastStepReuse().hits };
    }
    // NOTE: a row that attended a different (near-tied) chunk is not comparable at this step.
    const g = f64(got);
    for (let r = 0; r < rows; r++) {
      if (tied.has(r)) report.tieRows += 1;
      else report.error = Math.max(report.error, relError(rowOf(g, r, n), rowOf(want, r, n)));
    }
    reports.push(report);
  };

  let step = 0;
  for (const ev of sc.script) {
    if ('reset' in ev) {
      cache.reset(ev.reset);
      oracles.forEach((o) => o.reset(ev.reset));
    } else if ('prefill' in ev) {
      const R = ev.prefill.length;
      const S = ev.tokens;
      for (let l = 0; l < layers; l++) {
        const keys = makeTensor(concat(ev.prefill.map(() => keyModels[l]!.sample(S))), [R, Hkv, S, d], dt);
        const values = makeTensor(randn(R * Hkv * S * d, rand), [R, Hkv, S, d], dt);
        const queries = ev.queries ? makeTensor(randn(R * Hq * S * d, rand), [R, Hq, S, d], dt) : undefined;
        const out = cache.prefill(l, { keys: keys.t, values: values.t, queries: queries?.t, sequences: ev.prefill });
        const want = ev.prefill.map((s, i) =>
          oracles[l]!.prefill(s, rowOf(keys.f64, i, Hkv * S * d), rowOf(values.f64, i, Hkv * S * d), S, queries && rowOf(queries.f64, i, Hq * S * d)),
        );
        if (out) compare(`prefill ${ev.prefill} x${S}`, l, out, concat(want as Float64Array[]), R, false);
      }
    } else {
      for (let t = 0; t < ev.decode; t++, step++) {
        for (let l = 0; l < layers; l++) {
          const qv = concat(qBase[l]!.map((base) => base.map((x) => x + randn(1, rand, 0.3)[0]!)));
          const query = makeTensor(qv, [batch, Hq, 1, d], dt);
          const keySamples = Array.from({ length: batch }, () => keyModels[l]!.sample(1));
          const key = makeTensor(concat(keySamples), [batch, Hkv, 1, d], dt);
          const value = makeTensor(randn(batch * Hkv * d, rand), [batch, Hkv, 1, d], dt);
          const out = cache.decode(l, { query: query.t, key: key.t, value: value.t });
          compare(`decode step ${step}`, l, out, oracles[l]!.decode(query.f64, key.f64, value.f64), batch, true);
        }
      }
    }
  }
  cache.dispose();
  return reports;
}

function concat(parts: Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
