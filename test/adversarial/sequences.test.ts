// Random operation sequences (prefill of random lengths into random rows, decode of all rows or a
// subset, reset, crop within the exact tail, save → loadCache swaps), every output compared with
// exact float64 attention (OracleFullKV) where the policy is exact, invariants checked otherwise.
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { BUFFER_BYTES, createCache, loadCache, type Cache, type DType, type ShadowKVCache, type Tensor } from '../../packages/shadowkv/src/backend.js';
import { announceSeed, cacheProblems, openSnapshot, sameBytes } from '../helpers/adversarial.js';
import { f64, makeTensor, randn, relError, rng } from '../helpers/data.js';
import { OracleFullKV } from '../oracle/index.js';
import { forEachEnv, type TestEnv } from '../envs.js';

const SEED = announceSeed('test/adversarial/sequences.test.ts');
const counts = { sequences: 0, ops: 0, comparedOutputs: 0, compressions: 0, compactions: 0, worstError: {} as Record<string, number> };

const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const { layers: L, queryHeads: Hq, kvHeads: Hkv, headDim: d } = spec;
const B = 3;
const MAX_TOKENS = 96;
const C = 4;

/** Configurations: the exact policy, ShadowKV whose budget covers every chunk at full rank (exact too), and a small ShadowKV. */
const CONFIGS = {
  full: { policy: 'full' as const, exact: true, options: undefined },
  // NOTE: the basis has rank min(rank, compressed tokens), so it is full only when a row is compressed
  // with at least kvHeads * headDim = 32 tokens: denseThreshold 40 (- localTokens 4 = 36 >= 32).
  'shadowkv, every chunk, full rank': {
    policy: 'shadowkv' as const, exact: true,
    options: { rank: Hkv * d, chunkSize: C, budget: MAX_TOKENS, outlierChunks: 2, sinkTokens: 0, localTokens: 4, maxRecentTokens: 8, denseThreshold: 40, hostPageChunks: 3 },
  },
  'shadowkv, small budget': {
    policy: 'shadowkv' as const, exact: false,
    options: { rank: 6, chunkSize: C, budget: 8, outlierChunks: 1, sinkTokens: 4, localTokens: 4, maxRecentTokens: 8, denseThreshold: 20, hostPageChunks: 2 },
  },
};
type ConfigName = keyof typeof CONFIGS;

type Op =
  | { kind: 'prefill'; rows: number[]; tokens: number; queries: boolean }
  | { kind: 'decode'; rows: number[] | 'all'; steps: number; out: boolean }
  | { kind: 'reset'; row: number | 'all' }
  | { kind: 'crop'; row: number; back: number }
  | { kind: 'swap' };

const rowsArb = fc.shuffledSubarray([0, 1, 2], { minLength: 1 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('prefill' as const), rows: rowsArb, tokens: fc.integer({ min: 1, max: 40 }), queries: fc.boolean() }) },
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('decode' as const), rows: fc.oneof(fc.constant('all' as const), rowsArb), steps: fc.integer({ min: 1, max: 6 }), out: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reset' as const), row: fc.oneof(fc.constant('all' as const), fc.integer({ min: 0, max: B - 1 })) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('crop' as const), row: fc.integer({ min: 0, max: B - 1 }), back: fc.integer({ min: 0, max: 12 }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'swap' as const }) },
);

/** Exact attention per (layer, row): the tokens fed so far (pre-RoPE, as float64) and an oracle over them. */
class Reference {
  private tokens: { k: Float64Array; v: Float64Array }[][][] = Array.from({ length: L }, () => Array.from({ length: B }, () => []));
  private oracles: OracleFullKV[][] = Array.from({ length: L }, () => Array.from({ length: B }, () => new OracleFullKV(spec, 1)));

  length(l: number, s: number): number {
    return this.tokens[l]![s]!.length;
  }

  /** Keys and values `[Hkv, S, d]` of one input row; queries `[Hq, S, d]`: returns outputs `[Hq, S, d]` when queries are given. */
  prefill(l: number, s: number, keys: Float64Array, values: Float64Array, S: number, queries?: Float64Array): Float64Array | undefined {
    for (let t = 0; t < S; t++) {
      const k = new Float64Array(Hkv * d);
      const v = new Float64Array(Hkv * d);
      for (let h = 0; h < Hkv; h++) {
        k.set(keys.subarray((h * S + t) * d, (h * S + t + 1) * d), h * d);
        v.set(values.subarray((h * S + t) * d, (h * S + t + 1) * d), h * d);
      }
      this.tokens[l]![s]!.push({ k, v });
    }
    return this.oracles[l]![s]!.prefill(0, keys, values, S, queries);
  }

  decode(l: number, s: number, q: Float64Array, k: Float64Array, v: Float64Array): Float64Array {
    this.tokens[l]![s]!.push({ k, v });
    return this.oracles[l]![s]!.decode(q, k, v);
  }

  truncate(s: number, length: number): void {
    for (let l = 0; l < L; l++) {
      const kept = this.tokens[l]![s]!.slice(0, length);
      this.tokens[l]![s] = [];
      this.oracles[l]![s] = new OracleFullKV(spec, 1);
      if (!kept.length) continue;
      const S = kept.length;
      const keys = new Float64Array(Hkv * S * d);
      const values = new Float64Array(Hkv * S * d);
      kept.forEach(({ k, v }, t) => {
        for (let h = 0; h < Hkv; h++) {
          keys.set(k.subarray(h * d, (h + 1) * d), (h * S + t) * d);
          values.set(v.subarray(h * d, (h + 1) * d), (h * S + t) * d);
        }
      });
      this.prefill(l, s, keys, values, S);
    }
  }
}

/** First exact token of each row (its compressed prefix), the largest over layers, from a snapshot. */
function tailStarts(cache: Cache): number[] {
  if (cache.name !== 'shadowkv') return Array.from({ length: B }, () => 0);
  const layers = openSnapshot(cache.save()).content.layers as { store?: { tokens: number } }[][];
  return Array.from({ length: B }, (_, s) => Math.max(...layers.map((row) => row[s]!.store?.tokens ?? 0)));
}

/** Device bytes a cache may hold: its dense size plus a fixed overhead (an empty cache, per-row buffers and headroom, scratch). */
function deviceBound(cache: Cache, emptyDevice: number, dtype: DType): number {
  const b = BUFFER_BYTES[dtype];
  let perRow = 2 * Hkv * d * b * (320 + MAX_TOKENS / 8);
  if (cache.name === 'shadowkv') {
    const o = (cache as ShadowKVCache).options;
    const maxOutliers = o.outlierChunks + Math.ceil(o.sinkTokens / C);
    const cap = MAX_TOKENS / C + Math.ceil((o.localTokens + o.maxRecentTokens) / C) + 1;
    perRow += 2 * o.rank * Hkv * d * b + 2 * Hkv * (maxOutliers + o.budget / C) * C * d * b + 4 * (Hkv * (2 * cap + 3 + maxOutliers + o.budget / C) + 64);
    perRow += (cap / 8 + cap - MAX_TOKENS / C) * C * (o.rank + Hkv * d) * b;
  }
  return cache.memory().dense + emptyDevice + L * B * perRow + 256 * 1024;
}

async function runSequence(env: TestEnv, name: ConfigName, ops: Op[], seed: number): Promise<void> {
  counts.sequences += 1;
  const cfg = CONFIGS[name];
  const rand = rng(seed);
  const make = (shape: number[]) => makeTensor(randn(shape.reduce((a, b2) => a * b2, 1), rand), shape, env.dtype);
  let cache: Cache = cfg.policy === 'shadowkv'
    ? await createCache({ spec, policy: 'shadowkv', batch: B, dtype: env.dtype, backend: env.backend, maxTokens: MAX_TOKENS, options: cfg.options })
    : await createCache({ spec, policy: 'full', batch: B, dtype: env.dtype, backend: env.backend, maxTokens: MAX_TOKENS });
  const emptyDevice = cache.memory().device;
  const ref = new Reference();
  const where = (i: number, op: Op) => `[${env.name} ${name}] op ${i} ${JSON.stringify(op)}`;
  const compare = (label: string, got: Tensor, row: number, n: number, want: Float64Array) => {
    const g = f64(got).subarray(row * n, (row + 1) * n);
    if (!g.every(Number.isFinite)) throw new Error(`${label}: non-finite output`);
    if (cfg.exact) {
      counts.comparedOutputs += 1;
      const err = relError(g, want);
      const key = `${env.name} ${name}`;
      counts.worstError[key] = Math.max(counts.worstError[key] ?? 0, err);
      if (!(err < env.tolerance)) throw new Error(`${label}: relative error ${err.toExponential(2)} vs exact attention (tolerance ${env.tolerance})`);
    }
  };
  try {
    for (const [i, op] of ops.entries()) {
      counts.ops += 1;
      const at = where(i, op);
      if (op.kind === 'prefill') {
        const S = Math.min(op.tokens, ...op.rows.map((s) => MAX_TOKENS - ref.length(0, s)));
        if (S < 1) continue;
        const R = op.rows.length;
        for (let l = 0; l < L; l++) {
          const keys = make([R, Hkv, S, d]);
          const values = make([R, Hkv, S, d]);
          const queries = op.queries ? make([R, Hq, S, d]) : undefined;
          const out = cache.prefill(l, { keys: keys.t, values: values.t, queries: queries?.t, sequences: op.rows });
          const n = Hkv * S * d;
          op.rows.forEach((s, r) => {
            const want = ref.prefill(l, s, keys.f64.subarray(r * n, (r + 1) * n), values.f64.subarray(r * n, (r + 1) * n), S, queries?.f64.subarray(r * Hq * S * d, (r + 1) * Hq * S * d));
            if (queries) compare(`${at} prefill layer ${l} row ${s}`, out!, r, Hq * S * d, want!);
          });
        }
      } else if (op.kind === 'decode') {
        for (let step = 0; step < op.steps; step++) {
          const wanted = op.rows === 'all' ? [0, 1, 2] : op.rows;
          const rows = wanted.filter((s) => ref.length(0, s) < MAX_TOKENS);
          if (!rows.length) break;
          const R = rows.length;
          const whole = op.rows === 'all' && R === B;
          for (let l = 0; l < L; l++) {
            const q = make([R, Hq, 1, d]);
            const k = make([R, Hkv, 1, d]);
            const v = make([R, Hkv, 1, d]);
            const outArray = op.out ? (env.dtype === 'f32' ? new Float32Array(R * Hq * d) : new Uint16Array(R * Hq * d)) : undefined;
            const got = cache.decode(l, { query: q.t, key: k.t, value: v.t }, { sequences: whole ? undefined : rows, out: outArray });
            if (outArray && got.data !== outArray) throw new Error(`${at}: decode did not return options.out as its data`);
            rows.forEach((s, r) => {
              const want = ref.decode(l, s, q.f64.subarray(r * Hq * d, (r + 1) * Hq * d), k.f64.subarray(r * Hkv * d, (r + 1) * Hkv * d), v.f64.subarray(r * Hkv * d, (r + 1) * Hkv * d));
              compare(`${at} decode step ${step} layer ${l} row ${s}`, got, r, Hq * d, want);
            });
          }
        }
      } else if (op.kind === 'reset') {
        if (op.row === 'all') {
          cache.reset();
          for (let s = 0; s < B; s++) ref.truncate(s, 0);
        } else {
          cache.reset(op.row);
          ref.truncate(op.row, 0);
        }
      } else if (op.kind === 'crop') {
        const length = ref.length(0, op.row);
        const target = Math.max(tailStarts(cache)[op.row]!, length - op.back);
        cache.crop(op.row, target);
        ref.truncate(op.row, target);
      } else {
        const bytes = cache.save();
        const restored = await loadCache(bytes, { backend: env.backend });
        if (!sameBytes(restored.save(), bytes)) throw new Error(`${at}: save → loadCache → save is not byte-identical`);
        cache.dispose();
        cache = restored;
      }
      // Invariants after every op.
      for (let l = 0; l < L; l++) {
        for (let s = 0; s < B; s++) {
          if (cache.length(s, l) !== ref.length(l, s)) throw new Error(`${at}: length(${s}, ${l}) is ${cache.length(s, l)}, expected ${ref.length(l, s)}`);
          if (cache.name !== 'shadowkv') continue;
          for (let h = 0; h < Hkv; h++) {
            const sel = (cache as ShadowKVCache).selection(l, s, h);
            const chunks = Math.floor(ref.length(l, s) / C);
            const max = cfg.options!.budget / C;
            if (!sel.every((c, j) => Number.isInteger(c) && c >= 0 && c < chunks && (j === 0 || c > sel[j - 1]!)) || sel.length > max) {
              throw new Error(`${at}: selection(${l}, ${s}, ${h}) is [${sel}], not ascending in [0, ${chunks}) with at most ${max}`);
            }
          }
        }
      }
      const bound = deviceBound(cache, emptyDevice, env.dtype);
      if (cache.memory().device > bound) throw new Error(`${at}: memory().device ${cache.memory().device} is over dense + fixed overhead ${bound}`);
    }
    if (cache.name === 'shadowkv') {
      counts.compressions += cache.stats().compressions;
      counts.compactions += cache.stats().compactions;
    }
    const problems = await cacheProblems(cache, { backend: env.backend, seed });
    if (problems.length) throw new Error(`[${env.name} ${name}] after ${ops.length} ops: ${problems.join('; ')}`);
  } finally {
    cache.dispose();
  }
}

forEachEnv('random operation sequences', (env) => {
  const names = (Object.keys(CONFIGS) as ConfigName[]).filter((n) => !(n === 'shadowkv, every chunk, full rank' && env.dtype !== 'f32'));
  it.each(names)('%s: outputs match exact attention (or keep the invariants), lengths and selections stay consistent', async (name) => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 4, maxLength: 24 }), fc.nat(), async (ops, seed) => {
        // Start from a prompt in every row so that decode and compression have something to work on.
        await runSequence(env, name, [{ kind: 'prefill', rows: [0, 1, 2], tokens: 30, queries: false }, ...ops], seed);
      }),
      { seed: SEED, numRuns: 15 },
    );
  });
}, (e) => e.name.startsWith('wasm'));

describe('counts', () => {
  afterAll(() => console.log(`sequences counts: ${JSON.stringify(counts)}`));
  it('ran the sequences', () => {
    expect(counts.sequences).toBeGreaterThanOrEqual(100);
    expect(counts.comparedOutputs).toBeGreaterThan(1000);
    // The comparisons mean something only if rows were compressed and compacted.
    expect(counts.compressions).toBeGreaterThan(50);
    expect(counts.compactions).toBeGreaterThan(50);
  });
});
