// Differential tests of legal call sequences, every built-in policy, seeded and shrunk by fast-check.
// Random sequences (prefill of random lengths into random rows, with and without queries; decode of
// every row or a subset, host arrays, `out` or device tensors; crop; reset of a row or all; compress
// and compressAsync of some layers and rows) are run twice, against two invariants that need no
// oracle, so that every policy and option set is checked bit for bit, sparse ones included:
//   1. snapshot twin: save() + loadCache() at a random point, then the same calls on both: every
//      output, error, length(), stats() and selection() identical, and the twin's save() bytes the original's
//      (with hotChunks, less the hot-value counters: the hot slots are not saved, see HOT_STATS);
//   2. row independence: a batch of 3 rows with ragged histories gives, row by row, the bits that the
//      same row's history replayed alone in a batch-1 cache gives (the conformance kit's promise, "a
//      batch of 2 gives what two caches of 1 give (bit for bit)", docs/plugins.md, here with subsets,
//      crops, resets and compress in between).
// A failure prints fast-check's seed and the shrunk sequence; `SKV_SEED=<seed>` replays the file.
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { CapacityError, createCache, fromNumbers, loadCache, type Cache, type ShadowKVCache, type DType, type Tensor, type TensorData } from '../../packages/shadowkv/src/backend.js';
import { COUNTER } from '../../packages/shadowkv/src/backends/LayerStep.js';
import { announceSeed, openSnapshot, sameBytes, sealSnapshot } from '../helpers/adversarial.js';
import { randn, rng } from '../helpers/data.js';
import { forEachEnv, type TestEnv } from '../envs.js';

const SEED = announceSeed('test/reliability/sequences.test.ts');
// Sequences per (env, policy, invariant); SKV_RUNS raises it for a longer hunt.
const RUNS = process.env.SKV_RUNS ? Number(process.env.SKV_RUNS) : 50;
const counts = { sequences: 0, ops: 0, outputs: 0, twins: 0, refusedCrops: 0, compressed: 0, steps: 0, compressions: 0, compactions: 0 };

const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const { layers: L, queryHeads: Hq, kvHeads: Hkv, headDim: d } = spec;
const B = 3;
const MAX_TOKENS = 96;

/** Options small enough that every policy selects, evicts or compresses within 96 tokens. */
const SHADOWKV = { rank: 6, chunkSize: 4, budget: 8, outlierChunks: 1, sinkTokens: 4, localTokens: 4, maxRecentTokens: 8, denseThreshold: 20, hostPageChunks: 2 };
const CONFIGS = {
  full: { policy: 'full', options: {} },
  shadowkv: { policy: 'shadowkv', options: SHADOWKV },
  // The options past the paper: hot values, fp8 host tier, a dense first layer.
  'shadowkv, hot + fp8 + denseLayers': { policy: 'shadowkv', options: { ...SHADOWKV, hotChunks: 3, fp8Values: true, denseLayers: 1 } },
  quest: { policy: 'quest', options: { chunkSize: 4, budget: 8, recentTokens: 4 } },
  streaming: { policy: 'streaming', options: { sinkTokens: 2, windowTokens: 10 } },
  snapkv: { policy: 'snapkv', options: { budget: 12, windowTokens: 4, kernelSize: 3 } },
} as const;
type ConfigName = keyof typeof CONFIGS;

type Op =
  | { kind: 'prefill'; rows: number[]; tokens: number; queries: boolean; compressEach: boolean; seed: number }
  | { kind: 'decode'; rows: number[] | 'all'; steps: number; io: 'host' | 'out' | 'device'; seed: number }
  | { kind: 'crop'; row: number; back: number }
  | { kind: 'reset'; row: number | 'all' }
  | { kind: 'compress'; layers?: number[]; rows?: number[]; async: boolean }
  | { kind: 'twin' };

const rowsArb = fc.shuffledSubarray([0, 1, 2], { minLength: 1 });
const prefillArb = (tokens: fc.Arbitrary<number>) =>
  fc.record({ kind: fc.constant('prefill' as const), rows: rowsArb, tokens, queries: fc.boolean(), compressEach: fc.boolean(), seed: fc.nat() });
const opArb = (compress: boolean): fc.Arbitrary<Op> =>
  fc.oneof(
    { weight: 3, arbitrary: prefillArb(fc.integer({ min: 1, max: 30 })) },
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('decode' as const), rows: fc.oneof(fc.constant('all' as const), rowsArb), steps: fc.integer({ min: 1, max: 6 }), io: fc.constantFrom('host' as const, 'out' as const, 'device' as const), seed: fc.nat() }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('crop' as const), row: fc.integer({ min: 0, max: B - 1 }), back: fc.integer({ min: 0, max: 10 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('reset' as const), row: fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 0, max: B - 1 }) }, { weight: 1, arbitrary: fc.constant('all' as const) }) }) },
    { weight: compress ? 1 : 0, arbitrary: fc.record({ kind: fc.constant('compress' as const), layers: fc.option(fc.shuffledSubarray([0, 1], { minLength: 1 }), { nil: undefined }), rows: fc.option(rowsArb, { nil: undefined }), async: fc.boolean() }, { requiredKeys: ['kind', 'async'] }) },
  );
/** A ragged start (each row its own prompt length), then random calls. */
const sequenceArb = (name: ConfigName, twins: boolean): fc.Arbitrary<Op[]> => {
  const start = fc.tuple(...[0, 1, 2].map((r) => prefillArb(fc.integer({ min: 1, max: 40 })).map((op) => ({ ...op, rows: [r] }))));
  const ops = fc.array(twins ? fc.oneof({ weight: 8, arbitrary: opArb(CONFIGS[name].policy === 'shadowkv') }, { weight: 1, arbitrary: fc.constant({ kind: 'twin' as const }) }) : opArb(CONFIGS[name].policy === 'shadowkv'), { minLength: 4, maxLength: 20 });
  // Invariant 1 needs a twin somewhere: one at a random place if the draw has none.
  return fc.tuple(start, ops, fc.nat()).map(([s, o, at]) => (twins && !o.some((x) => x.kind === 'twin') ? [...s, ...o.slice(0, at % (o.length + 1)), { kind: 'twin' as const }, ...o.slice(at % (o.length + 1))] : [...s, ...o]));
};

async function makeCache(env: TestEnv, name: ConfigName, batch: number): Promise<Cache> {
  const { policy, options } = CONFIGS[name];
  return createCache({ spec, policy, batch, dtype: env.dtype, backend: env.backend, maxTokens: MAX_TOKENS, options: options as never });
}

/** The bits of an output (f32 as its 32-bit patterns, 16-bit dtypes as they are): compared exactly, NaN included. */
function bits(data: TensorData): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
}
const rowBits = (data: TensorData, row: number, n: number) => bits(data.subarray(row * n, (row + 1) * n) as TensorData);

/** Inputs of one op, per layer and per row of the op (so that a row's inputs are the same in a batch and alone). */
class OpInputs {
  private readonly rand: () => number;
  constructor(seed: number, private readonly dtype: DType) {
    this.rand = rng(seed);
  }
  /** Rows drawn by `draw`, as one tensor: each element rounded alone, so a row has the same bits in a batch and alone. */
  tensor(rows: number[][], shape: number[]): Tensor {
    const all: number[] = [];
    rows.forEach((r) => all.push(...r));
    return { data: fromNumbers(all, this.dtype), shape, dtype: this.dtype };
  }
  /** One row's values; every cache draws every row of the op, so the stream stays in step. */
  draw(n: number): number[] {
    return Array.from(randn(n, this.rand));
  }
}

/** What one call gave: outputs per row, lengths, or the error it threw. Compared entry by entry. */
type Result = { label: string; row?: number; bits?: Uint8Array; value?: unknown };

/** A prefill's tokens, capped to its rows' room (below 1: some row is full, and the op is skipped). */
function prefillTokens(op: Extract<Op, { kind: 'prefill' }>, lengths: number[]): number {
  return Math.min(op.tokens, ...op.rows.map((s) => MAX_TOKENS - lengths[s]!));
}

/**
 * Runs one op on a cache whose rows are `rows` of the op's own rows (a batch of 3: all of them;
 * a single cache of row r: just [r], as its row 0). Inputs are drawn for every row of the op in
 * the same order whichever cache runs it, so row r sees the same numbers in both.
 */
async function apply(cache: Cache, op: Op, env: TestEnv, lengths: number[], mine: (s: number) => number | undefined, label: string): Promise<Result[]> {
  const out: Result[] = [];
  const single = cache.batch === 1;
  if (op.kind === 'prefill') {
    const S = prefillTokens(op, lengths);
    if (S < 1) return out;
    const inputs = new OpInputs(op.seed, env.dtype);
    for (let l = 0; l < L; l++) {
      const k = op.rows.map(() => inputs.draw(Hkv * S * d));
      const v = op.rows.map(() => inputs.draw(Hkv * S * d));
      const q = op.queries ? op.rows.map(() => inputs.draw(Hq * S * d)) : undefined;
      const take = op.rows.map((s, i) => [s, i] as const).filter(([s]) => mine(s) !== undefined);
      if (!take.length) continue;
      const R = take.length;
      const pick = (xs: number[][]) => take.map(([, i]) => xs[i]!);
      const y = cache.prefill(l, {
        keys: inputs.tensor(pick(k), [R, Hkv, S, d]),
        values: inputs.tensor(pick(v), [R, Hkv, S, d]),
        queries: q && inputs.tensor(pick(q), [R, Hq, S, d]),
        sequences: single ? undefined : take.map(([s]) => s),
      });
      if (q) take.forEach(([s], r) => out.push({ label: `${label} prefill layer ${l}`, row: s, bits: rowBits(y!.data, r, Hq * S * d) }));
      if (op.compressEach && cache.name === 'shadowkv') {
        const n = (cache as ShadowKVCache).compress({ layers: [l], sequences: single ? undefined : take.map(([s]) => s) });
        out.push({ label: `${label} compress after prefill layer ${l}`, value: n });
      }
    }
    for (const s of op.rows) lengths[s]! += S;
  } else if (op.kind === 'decode') {
    const inputs = new OpInputs(op.seed, env.dtype);
    const wanted = op.rows === 'all' ? [0, 1, 2] : op.rows;
    for (let step = 0; step < op.steps; step++) {
      const rows = wanted.filter((s) => lengths[s]! < MAX_TOKENS);
      if (!rows.length) break;
      for (let l = 0; l < L; l++) {
        const q = rows.map(() => inputs.draw(Hq * d));
        const k = rows.map(() => inputs.draw(Hkv * d));
        const v = rows.map(() => inputs.draw(Hkv * d));
        const take = rows.map((s, i) => [s, i] as const).filter(([s]) => mine(s) !== undefined);
        if (!take.length) continue;
        const R = take.length;
        const pick = (xs: number[][]) => take.map(([, i]) => xs[i]!);
        const sequences = single || (op.rows === 'all' && R === B) ? undefined : take.map(([s]) => s);
        const [query, key, value] = [inputs.tensor(pick(q), [R, Hq, 1, d]), inputs.tensor(pick(k), [R, Hkv, 1, d]), inputs.tensor(pick(v), [R, Hkv, 1, d])];
        let y: TensorData;
        if (op.io === 'device') {
          const t = [query, key, value].map((x) => cache.allocTensor(x.shape, x.dtype, x.data));
          y = cache.decode(l, { query: t[0]!, key: t[1]!, value: t[2]! }, { sequences }).read();
          t.forEach((x) => x.dispose());
        } else {
          const o = op.io === 'out' ? (env.dtype === 'f32' ? new Float32Array(R * Hq * d) : new Uint16Array(R * Hq * d)) : undefined;
          y = cache.decode(l, { query, key, value }, { sequences, out: o }).data;
        }
        take.forEach(([s], r) => out.push({ label: `${label} decode step ${step} layer ${l}`, row: s, bits: rowBits(y, r, Hq * d) }));
      }
      for (const s of rows) lengths[s]! += 1;
    }
  } else if (op.kind === 'crop') {
    const target = Math.max(0, lengths[op.row]! - op.back);
    const r = mine(op.row);
    if (r !== undefined) {
      try {
        cache.crop(r, target);
        out.push({ label: `${label} crop`, row: op.row, value: 'cropped' });
      } catch (err) {
        // A crop into a compressed or evicted prefix is refused (docs/guide.md): legal, and the row stays.
        // The message names the cache's own row index (a single cache's row is 0): compare the rest.
        if (!(err instanceof CapacityError)) throw err;
        counts.refusedCrops += 1;
        out.push({ label: `${label} crop`, row: op.row, value: `refused: ${err.message.replace(/^crop\(\d+, /, 'crop(row, ')}` });
        return out;
      }
    }
    lengths[op.row] = target;
  } else if (op.kind === 'reset') {
    if (op.row === 'all') {
      cache.reset();
      lengths.fill(0);
    } else {
      const r = mine(op.row);
      if (r !== undefined) cache.reset(r);
      lengths[op.row] = 0;
    }
  } else if (op.kind === 'compress') {
    if (cache.name !== 'shadowkv') return out;
    const c = cache as ShadowKVCache;
    const rows = (op.rows ?? [0, 1, 2]).filter((s) => mine(s) !== undefined);
    if (!rows.length) return out;
    const o = { layers: op.layers, sequences: single ? undefined : op.rows };
    const n = op.async ? await c.compressAsync(o) : c.compress(o);
    counts.compressed += n;
    out.push({ label: `${label} compress`, value: n });
  }
  return out;
}

/**
 * The hot-value cache is not saved (docs/guide.md, test/policies/hotValues.test.ts: a snapshot restores
 * without it and decodes the same bits), so a twin serves from the host what the original served
 * from its hot slots until they refill: its hot hits and fetched bytes are not promised equal.
 */
const HOT_STATS = ['hotHitRate', 'lastHotHits', 'bytesFetched', 'lastBytesFetched'];

/** save() bytes, with the hot-value counters of each layer zeroed where the cache has hot slots (HOT_STATS says why). */
function savedBytes(cache: Cache): Uint8Array {
  const bytes = cache.save();
  if (!(cache as { options?: { hotChunks?: number } }).options?.hotChunks) return bytes;
  const { envelope, content } = openSnapshot(bytes);
  for (const c of content.layerCounters as Float64Array[]) c[COUNTER.hotHits] = c[COUNTER.lastHotHits] = 0;
  return sealSnapshot(envelope, content);
}

/** What a cache reports after each op, for the twin check: lengths at every layer, stats, selections. */
function observe(cache: Cache): unknown {
  const lengths = Array.from({ length: L }, (_, l) => Array.from({ length: B }, (_, s) => cache.length(s, l)));
  const stats: Record<string, unknown> = { ...cache.stats() };
  if ((cache as { options?: { hotChunks?: number } }).options?.hotChunks) HOT_STATS.forEach((k) => delete stats[k]);
  const selection = (cache as { selection?: (l: number, s: number, h: number) => number[] }).selection?.bind(cache);
  const selections = selection && Array.from({ length: L }, (_, l) => Array.from({ length: B }, (_, s) => Array.from({ length: Hkv }, (_, h) => selection(l, s, h))));
  return { lengths, stats, selections };
}

function sameResults(a: Result[], b: Result[], where: string): void {
  if (a.length !== b.length) throw new Error(`${where}: ${a.length} results vs ${b.length}: ${a.map((r) => r.label).join(', ')} / ${b.map((r) => r.label).join(', ')}`);
  a.forEach((x, i) => {
    const y = b[i]!;
    counts.outputs += 1;
    if (x.label !== y.label || x.row !== y.row) throw new Error(`${where}: result ${i} is ${x.label} row ${x.row} vs ${y.label} row ${y.row}`);
    if (x.bits ? !y.bits || !sameBytes(x.bits, y.bits) : JSON.stringify(x.value) !== JSON.stringify(y.value)) {
      throw new Error(`${where}: ${x.label} row ${x.row} differs: ${x.bits ? 'output bits' : `${JSON.stringify(x.value)} vs ${JSON.stringify(y.value)}`}`);
    }
  });
}

/** Invariant 1: from a `twin` op on, each twin (save() + loadCache() of the original) gets the same calls and must give the same bits. */
async function runTwins(env: TestEnv, name: ConfigName, ops: Op[]): Promise<void> {
  counts.sequences += 1;
  const original = await makeCache(env, name, B);
  const twins: { cache: Cache; lengths: number[]; from: number }[] = [];
  const lengths = [0, 0, 0];
  const all = (s: number) => s;
  try {
    for (const [i, op] of ops.entries()) {
      counts.ops += 1;
      const where = `[${env.name} ${name}] op ${i} ${JSON.stringify(op)}`;
      if (op.kind === 'twin') {
        counts.twins += 1;
        // A twin of the latest twin, where there is one: a restored cache must save what restores it again.
        const bytes = (twins.at(-1)?.cache ?? original).save();
        const cache = await loadCache(bytes, { backend: env.backend });
        if (!sameBytes(cache.save(), bytes)) throw new Error(`${where}: the twin's save() is not the bytes it was loaded from`);
        twins.push({ cache, lengths: [...lengths], from: i });
        continue;
      }
      const want = await apply(original, op, env, lengths, all, `op ${i}`);
      const seen = observe(original);
      for (const t of twins) {
        const got = await apply(t.cache, op, env, t.lengths, all, `op ${i}`);
        sameResults(want, got, `${where}, twin made at op ${t.from}`);
        expect(observe(t.cache), `${where}, twin made at op ${t.from}: lengths, stats, selections`).toEqual(seen);
      }
    }
    const bytes = savedBytes(original);
    for (const t of twins) if (!sameBytes(savedBytes(t.cache), bytes)) throw new Error(`[${env.name} ${name}] after ${ops.length} ops: the twin made at op ${t.from} saves other bytes than the original`);
    const stats = original.stats();
    counts.steps += stats.steps;
    counts.compressions += stats.compressions;
    counts.compactions += stats.compactions;
  } finally {
    [original, ...twins.map((t) => t.cache)].forEach((c) => c.dispose());
  }
}

/** Invariant 2: a batch of 3 with ragged histories against each row replayed alone in a batch-1 cache. */
async function runRows(env: TestEnv, name: ConfigName, ops: Op[]): Promise<void> {
  counts.sequences += 1;
  const batch = await makeCache(env, name, B);
  const singles: Cache[] = [];
  try {
    for (let r = 0; r < B; r++) singles.push(await makeCache(env, name, 1));
    const lengths = [0, 0, 0];
    for (const [i, op] of ops.entries()) {
      counts.ops += 1;
      const where = `[${env.name} ${name}] op ${i} ${JSON.stringify(op)}`;
      // Each single sizes the op (prefill tokens, rows with room) from the batch's lengths before it.
      const before = [...lengths];
      const want = await apply(batch, op, env, lengths, (s) => s, `op ${i}`);
      let got: Result[] = [];
      for (let r = 0; r < B; r++) got = got.concat(await apply(singles[r]!, op, env, [...before], (s) => (s === r ? 0 : undefined), `op ${i}`));
      // The batch gives its results in the op's row order, the singles row by row: compare them per row.
      const key = (x: Result) => `${x.row ?? -1}`;
      for (let r = -1; r < B; r++) {
        const w = want.filter((x) => key(x) === `${r}`);
        const g = got.filter((x) => key(x) === `${r}`);
        if (r === -1) {
          // Row-less results are compress counts: the batch's is the sum of the rows'.
          const total = (xs: Result[]) => xs.reduce((n, x) => n + (x.value as number), 0);
          if (total(w) !== total(g)) throw new Error(`${where}: the batch compressed ${total(w)} (layer, row) pairs, the rows alone ${total(g)}`);
          continue;
        }
        sameResults(w, g, `${where}, row ${r} in the batch vs alone`);
      }
      for (let l = 0; l < L; l++) {
        for (let r = 0; r < B; r++) {
          if (batch.length(r, l) !== singles[r]!.length(0, l)) throw new Error(`${where}: length(${r}, ${l}) is ${batch.length(r, l)} in the batch, ${singles[r]!.length(0, l)} alone`);
        }
      }
    }
  } finally {
    [batch, ...singles].forEach((c) => c.dispose());
  }
}

forEachEnv('legal call sequences', (env) => {
  for (const name of Object.keys(CONFIGS) as ConfigName[]) {
    it(`${name}: a snapshot twin continues bit for bit (outputs, lengths, stats, selections, save bytes)`, async () => {
      await fc.assert(fc.asyncProperty(sequenceArb(name, true), (ops) => runTwins(env, name, ops)), { seed: SEED, numRuns: RUNS });
    });
    it(`${name}: each row of a ragged batch gives the bits it gives alone in a batch-1 cache`, async () => {
      await fc.assert(fc.asyncProperty(sequenceArb(name, false), (ops) => runRows(env, name, ops)), { seed: SEED, numRuns: RUNS });
    });
  }
}, (e) => e.name.startsWith('wasm'));

describe('counts', () => {
  afterAll(() => console.log(`reliability sequences counts: ${JSON.stringify(counts)}`));
  it('ran the sequences', () => {
    expect(counts.sequences).toBeGreaterThanOrEqual(2 * RUNS * Object.keys(CONFIGS).length);
    // The comparisons mean something only if rows were compressed, compacted, refused a crop and stepped.
    expect(counts.compressions).toBeGreaterThan(50);
    expect(counts.compactions).toBeGreaterThan(50);
    expect(counts.refusedCrops).toBeGreaterThan(50);
    expect(counts.twins).toBeGreaterThanOrEqual(RUNS * Object.keys(CONFIGS).length);
  });
});
