// Drives a scenario through a real cache and one oracle per layer, reporting every comparison.
import { createCache, type DType, type Tensor } from '../../packages/shadowkv/src/backend.js';
import type { ShadowKVCache } from '../../packages/shadowkv/src/backend.js';
import { OracleFullKV, OracleShadowKV } from '../oracle/index.js';
import { fp8Row } from '../oracle/fp8.js';
import { rounded } from '../helpers/device.js';
import type { TestEnv } from '../envs.js';
import { f64, relError } from '../helpers/data.js';
import { concat, scenarioSteps } from './scenarioInputs.js';
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

/**
 * The float64 oracle of a shadowkv cache with `options` on the scenario's spec and batch. Under
 * fp8Values its stored chunks come back as the fp8 tier returns them, from the values the runtime
 * quantizes (rounded to the storage dtype first).
 */
export function shadowKVOracle(sc: Scenario, options: Scenario['options'], dtype: DType): OracleShadowKV {
  // packedValues is lossless: the oracle is the plain tier's.
  const { fp8Values, packedValues: _lossless, ...oracleOptions } = options;
  const storedValue = fp8Values ? (row: Float64Array) => fp8Row(rounded(row, dtype)) : undefined;
  return new OracleShadowKV(sc.spec, oracleOptions, sc.batch, storedValue);
}

export async function runScenario(env: TestEnv, sc: Scenario, policy: 'shadowkv' | 'full'): Promise<StepReport[]> {
  const { spec, batch, options } = sc;
  const { queryHeads: Hq, kvHeads: Hkv, headDim: d, layers } = spec;
  const cache = policy === 'shadowkv'
    ? await createCache({ spec, policy, batch, dtype: env.dtype, backend: env.backend, options })
    : await createCache({ spec, policy, batch, dtype: env.dtype, backend: env.backend });
  const oracles = Array.from({ length: layers }, () => (policy === 'shadowkv' ? shadowKVOracle(sc, options, env.dtype) : new OracleFullKV(spec, batch)));
  const reports: StepReport[] = [];

  const compare = (label: string, layer: number, got: Tensor, want: Float64Array, rows: number, checkSelection: boolean) => {
    const n = got.data.length / rows;
    const report: StepReport = { label, layer, error: 0, tieRows: 0, selectionMismatches: [], nearTies: 0 };
    const tied = new Set<number>();
    if (checkSelection && policy === 'shadowkv') {
      const o = oracles[layer] as OracleShadowKV;
      const c = cache as ShadowKVCache;
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

  for (const ev of scenarioSteps(sc, env.dtype)) {
    if (ev.kind === 'reset') {
      cache.reset(ev.sequence);
      oracles.forEach((o) => o.reset(ev.sequence));
    } else if (ev.kind === 'prefill') {
      const { layer: l, sequences, tokens: S, keys, values, queries } = ev;
      const out = cache.prefill(l, { keys: keys.t, values: values.t, queries: queries?.t, sequences });
      const want = sequences.map((s, i) =>
        oracles[l]!.prefill(s, rowOf(keys.f64, i, Hkv * S * d), rowOf(values.f64, i, Hkv * S * d), S, queries && rowOf(queries.f64, i, Hq * S * d)),
      );
      if (out) compare(`prefill ${sequences} x${S}`, l, out, concat(want as Float64Array[]), sequences.length, false);
    } else {
      const { layer: l, query, key, value } = ev;
      const out = cache.decode(l, { query: query.t, key: key.t, value: value.t });
      compare(`decode step ${ev.step}`, l, out, oracles[l]!.decode(query.f64, key.f64, value.f64), batch, true);
    }
  }
  cache.dispose();
  return reports;
}
