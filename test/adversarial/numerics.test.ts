// Numerical extremes with legal, finite inputs: magnitudes at the edge of each dtype, where the
// runtimes' f32 arithmetic (scale q·k, sums of p v, chunk means, norms) would overflow though every
// input fits. Each output must be finite and match the float64 oracle within the env's tolerance,
// or the call must be a typed error naming why, with the cache unchanged.
import { expect, it } from 'vitest';
import { createCache, loadCache, NonFiniteError, ShadowKVCache, toFloat32, type Cache, type DType, type ModelSpec, type Tensor } from '../../packages/shadowkv/src/backend.js';
import { OracleFullKV, OracleShadowKV } from '../oracle/index.js';
import { makeTensor, randn, relError, rng } from '../helpers/data.js';
import { forEachEnv, type TestEnv } from '../envs.js';

const spec: ModelSpec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 1e12 } };
// Every policy under options that attend every stored token, so `full`'s oracle is each one's.
const ATTEND_ALL: [string, object][] = [
  ['full', {}],
  ['shadowkv', { rank: 32, chunkSize: 4, budget: 65536, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 8 }],
  ['streaming', { sinkTokens: 4, windowTokens: 65536 }],
  ['quest', { chunkSize: 4, budget: 65536 }],
  ['snapkv', { budget: 65536, windowTokens: 4 }],
];
// Sparse ShadowKV: 4 of 18 chunks per head, chosen by the landmark scores.
const SPARSE = { rank: 32, chunkSize: 4, budget: 16, outlierChunks: 1, localTokens: 8, sinkTokens: 0, maxRecentTokens: 16, denseThreshold: 8 };

type Scales = { q: number; k: number; v: number };
type Input = { t: Tensor; f64: Float64Array };
type Step = { q: Input; k: Input; v: Input };

/**
 * A prompt of S tokens (with queries) and `steps` decode tokens: queries and values N(0, 1), keys
 * c_t u (`random`: N(0, 1)), times each role's scale. Past f32, softmax is the argmax, which 16-bit rounding must not
 * move: so u (max |u_j| = 1) lives in the pairs RoPE turns by < 0.3% over these positions (theta
 * 1e12), and the c_t of the first 73 positions are distinct powers of 1.03 (margins of 3%).
 */
function inputs(s: ModelSpec, dtype: DType, S: number, steps: number, x: Scales, seed = 11, random = false) {
  const rand = rng(seed);
  const { queryHeads: Hq, kvHeads: Hkv, headDim: d } = s;
  const t = (shape: number[], scale: number) => makeTensor(randn(shape.reduce((a, b) => a * b, 1), rand, scale), shape, dtype);
  const u = randn(Hkv * d, rand).map((v, j) => (j % (d / 2) < 3 ? 0 : v));
  const top = u.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const noise = () => randn(1, rand)[0]!;
  const keys = (t0: number, n: number) => {
    const k = new Float64Array(Hkv * n * d);
    for (let h = 0; h < Hkv; h++) for (let i = 0; i < n; i++) for (let e = 0; e < d; e++) k[(h * n + i) * d + e] = random ? x.k * noise() : (x.k * 1.03 ** (((t0 + i) * 37) % 73) * u[h * d + e]!) / top;
    return makeTensor(k, [1, Hkv, n, d], dtype);
  };
  const prompt = { q: t([1, Hq, S, d], x.q), k: keys(0, S), v: t([1, Hkv, S, d], x.v) };
  const tokens: Step[] = Array.from({ length: steps }, (_, i) => ({ q: t([1, Hq, 1, d], x.q), k: keys(S + i, 1), v: t([1, Hkv, 1, d], x.v) }));
  return { prompt, tokens, S };
}

/**
 * Queries 1e20 in dims d/2 - 2 and d/2 - 1 (every head, prompt and steps) and prompt key `key` 1e20
 * and -0.98e20 there: that key's f32 products with every query are +-Infinity (a NaN logit), while in
 * float64 its logit, 2% of 1e40, is the largest, so every query from position `key` on attends it
 * alone. NOTE: those dims are in the slowest pairs RoPE turns (half style, theta 1e12: < 1e-7 rad
 * over these positions); in dims 3 and 4 at d 128 a turn of ~0.27 rad a position broke the 2% left,
 * and f32 cancellation, no overflow, made the outputs wrong on both runtimes.
 */
function nanLogit(s: ModelSpec, dtype: DType, run: ReturnType<typeof inputs>, key: number): ReturnType<typeof inputs> {
  const d = s.headDim;
  const edit = (x: Input, per: number, f: (t: number, row: Float64Array) => void) => {
    for (let r = 0; r < x.f64.length / d; r++) f(r % per, x.f64.subarray(r * d, (r + 1) * d));
    Object.assign(x, makeTensor(x.f64, [...x.t.shape], dtype));
  };
  const queries = (x: Input, per: number) => edit(x, per, (_, row) => row.fill(1e20, d / 2 - 2, d / 2));
  queries(run.prompt.q, run.S);
  edit(run.prompt.k, run.S, (t, row) => t === key && row.set([1e20, -0.98e20], d / 2 - 2));
  run.tokens.forEach((x) => queries(x.q, 1));
  return run;
}

type Reference = Pick<OracleFullKV, 'prefill' | 'decode'>;

/** An oracle's outputs, computed on the first run and replayed to every later one (a long prompt's took seconds). */
function replayed(oracle: Reference): () => Reference {
  const outs: Float64Array[] = [];
  return () => {
    let i = 0;
    const next = (f: () => Float64Array) => (i < outs.length ? outs[i++]! : (outs.push(f()), outs[i++]!));
    return { prefill: (...a) => next(() => oracle.prefill(...a)!), decode: (...a) => next(() => oracle.decode(...a)) };
  };
}

/** Runs a cache and an oracle on the same inputs; returns each output's relative error (NaN where the cache's is not finite). */
function compare(cache: Cache, oracle: Reference, run: ReturnType<typeof inputs>, each?: (step: number) => void): number[] {
  const { prompt: p, tokens, S } = run;
  const err = (got: Tensor, want: Float64Array) => {
    const g = toFloat32(got);
    return g.every(Number.isFinite) ? relError(Float64Array.from(g), want) : NaN;
  };
  const errors = [err(cache.prefill(0, { keys: p.k.t, values: p.v.t, queries: p.q.t })!, oracle.prefill(0, p.k.f64, p.v.f64, S, p.q.f64)!)];
  tokens.forEach((x, i) => {
    errors.push(err(cache.decode(0, { query: x.q.t, key: x.k.t, value: x.v.t }), oracle.decode(x.q.f64, x.k.f64, x.v.f64)));
    each?.(i);
  });
  return errors;
}

const within = (errors: number[], env: TestEnv, label: string) =>
  errors.forEach((e, i) => expect(e, `${label}: output ${i} (NaN: not finite)`).toBeLessThan(env.tolerance));

async function attendAll(env: TestEnv, s: ModelSpec, x: Scales, S = 70): Promise<void> {
  for (const [policy, options] of ATTEND_ALL) {
    const cache = await createCache({ spec: s, policy: policy as 'full', dtype: env.dtype, backend: env.backend, maxTokens: 128, options: options as never });
    within(compare(cache, new OracleFullKV(s, 1), inputs(s, env.dtype, S, 3, x)), env, policy);
    cache.dispose();
  }
}

// f16 inputs cannot get there (65504² x 16 is far from FLT_MAX); f32 and bf16 ones can. At d 16 the
// CUDA decode takes its shared-memory tile kernel and the prefill its f32 kernel.
forEachEnv('numerics: finite inputs whose f32 intermediates overflow', (env) => {
  // scale q·k of 1e25 x 1e25: every logit +-Infinity in f32, so softmax gave NaN (or zeros where
  // all went to -inf); the prompt is 70 tokens, past one 64-key tile of the prefill attention.
  it('q·k past FLT_MAX (q, k ~ 1e25): every policy matches the float64 oracle, prefill and decode', async () => {
    await attendAll(env, spec, { q: 1e25, k: 1e25, v: 1 });
  });

  // Queries 1e20 and key 68 with 1e20 and -0.98e20 in the same two dims (nanLogit): its f32 products
  // are +Infinity and -Infinity, its logit NaN among finite ones, which the wasm runtime's scalar exp
  // (the last n % 4 keys of a block: 68 of the first decode step's 64-70) took to 0, dropping the key,
  // though in float64 its logit (2% of 1e40) is the largest.
  it('a NaN logit among finite ones (products of ±1e40 that nearly cancel): every policy matches the oracle', async () => {
    for (const [policy, options] of ATTEND_ALL) {
      const cache = await createCache({ spec, policy: policy as 'full', dtype: env.dtype, backend: env.backend, maxTokens: 128, options: options as never });
      within(compare(cache, new OracleFullKV(spec, 1), nanLogit(spec, env.dtype, inputs(spec, env.dtype, 70, 3, { q: 1, k: 1, v: 1 }), 68)), env, policy);
      cache.dispose();
    }
  });

  // Attention scale 100 takes a query of 1e37 past FLT_MAX before any product.
  it('spec.scale 100 with queries ~1e37 and keys ~1: matches the oracle', async () => {
    await attendAll(env, { ...spec, scale: 100 }, { q: 1e37, k: 1, v: 1 }, 20);
  });

  // Values ~5e37 (up to ~2e38): the unnormalized sum of p v over a few tokens passed FLT_MAX (Infinity out),
  // though the output, an average of the values, is finite.
  it('values ~5e37: the attention average stays finite and matches the oracle', async () => {
    await attendAll(env, spec, { q: 1, k: 1, v: 5e37 }, 20);
  });
}, (e) => e.dtype !== 'f16');

// d 128 and 4 query heads a kv head: the CUDA decode's register (f32) or tensor-core (bf16) kernels,
// split over blocks and merged, and for bf16 the tensor-core prefill (a prompt this long). The wasm
// runtime has one attention routine for every d, which the cases above cover.
forEachEnv('numerics: f32 overflow in the CUDA kernels of common shapes', (env) => {
  it('values ~5e37 in a 1536-token prompt at d 128: full and lossless shadowkv match the oracle', async () => {
    const wide: ModelSpec = { layers: 1, queryHeads: 4, kvHeads: 1, headDim: 128, rope: { theta: 1e12 } };
    const run = inputs(wide, env.dtype, 1536, 2, { q: 1, k: 1, v: 5e37 }, 13, true);
    const oracle = replayed(new OracleFullKV(wide, 1));
    for (const [policy, options] of [['full', {}], ['shadowkv', { ...(ATTEND_ALL[1]![1] as object), rank: 128 }]] as const) {
      const cache = await createCache({ spec: wide, policy, dtype: env.dtype, backend: env.backend, maxTokens: 1600, options: options as never });
      within(compare(cache, oracle(), run), env, policy);
      cache.dispose();
    }
  }, 60_000);

  it('a NaN logit among finite ones at key 1000 of a 1536-token prompt at d 128 (nanLogit): full matches the oracle', async () => {
    const wide: ModelSpec = { layers: 1, queryHeads: 4, kvHeads: 1, headDim: 128, rope: { theta: 1e12 } };
    const run = nanLogit(wide, env.dtype, inputs(wide, env.dtype, 1536, 2, { q: 1, k: 1, v: 1 }, 17, true), 1000);
    const cache = await createCache({ spec: wide, policy: 'full', dtype: env.dtype, backend: env.backend, maxTokens: 1600 });
    within(compare(cache, new OracleFullKV(wide, 1), run), env, 'full');
    cache.dispose();
  }, 60_000);
}, (e) => e.name.startsWith('cuda-') && e.dtype !== 'f16');

forEachEnv('numerics: a query RoPE would take past f32', (env) => {
  // RoPE rotates queries in f32: a pair of 3e38 becomes Infinity there (keys already had this bound).
  it('a query past FLT_MAX / sqrt(2) is a NonFiniteError naming RoPE, the cache unchanged', async () => {
    for (const [policy, options] of ATTEND_ALL) {
      const cache = await createCache({ spec, policy: policy as 'full', dtype: env.dtype, backend: env.backend, maxTokens: 64, options: options as never });
      const run = inputs(spec, env.dtype, 12, 1, { q: 1, k: 1, v: 1 });
      cache.prefill(0, { keys: run.prompt.k.t, values: run.prompt.v.t });
      const before = cache.save();
      const big = (x: Input, i: number) => makeTensor(x.f64.map((v, j) => (j === i ? 3e38 : v)), [...x.t.shape], env.dtype).t;
      const { q, k, v } = run.tokens[0]!;
      expect(() => cache.decode(0, { query: big(q, 5), key: k.t, value: v.t }), policy).toThrow(NonFiniteError);
      expect(() => cache.decode(0, { query: big(q, 5), key: k.t, value: v.t }), policy).toThrow(/query\[5\] is 3\.0\d*e\+38 .*within ±2\.40616e\+38 to stay finite after RoPE/);
      expect(() => cache.prefill(0, { keys: k.t, values: v.t, queries: big(q, 7) }), policy).toThrow(/queries\[7\] is 3\.0\d*e\+38/);
      expect(Buffer.from(cache.save()).equals(Buffer.from(before)), `${policy}: the cache changed`).toBe(true);
      cache.dispose();
    }
  });
}, (e) => e.dtype !== 'f16');

// Keys ~1e25 overflowed their f32 squared norms, so every outlier cosine was 0 or NaN; queries and
// keys ~1e20 take every landmark logit past FLT_MAX (+-Infinity, or NaN where products of both signs
// meet), whose f32 softmax was NaN for every chunk, so the selection took whatever the NaN ordering
// gave (a failed head is now scored in float64). Queries ~1e25 alone keep the logits finite, a
// softmax that is an argmax. (f32 only: bf16 rounds post-RoPE keys, which the oracle does not, and
// past f32 a softmax is an argmax, which that rounding moves among near-ties.)
forEachEnv('numerics: sparse selection past f32', (env) => {
  // (q, k ~1e20 hung the CUDA prefill attention on an H100 until warp_max agreed across lanes:
  // bench/NOTES.md v57.)
  const cases = [{ q: 1, k: 1e25, v: 1 }, { q: 1e25, k: 1, v: 1 }, { q: 1e20, k: 1e20, v: 1 }];
  // CUDA scores and selects in one of three ways (SHADOWKV_CUDA_SELECT_BLOCKS, read when a device is
  // made): the default, one block a kv head (devices without clusters), a cluster of 4 with its slice
  // of the logits in shared memory or not; each redoes a failed head in float64 itself.
  const plans = env?.backend === 'cuda' ? ['', '1', '4', '4 SHADOWKV_CUDA_SELECT_NEAR=0'] : [''];
  it.each(plans)('sparse shadowkv with keys ~1e25, queries ~1e25, and both ~1e20: the oracle\'s chunks are selected and outputs match (plan %o)', async (plan) => {
    for (const x of cases) {
      const [blocks, near] = plan.split(' ');
      if (blocks) process.env.SHADOWKV_CUDA_SELECT_BLOCKS = blocks;
      if (near) process.env.SHADOWKV_CUDA_SELECT_NEAR = near.split('=')[1];
      const cache = (await createCache({ spec, policy: 'shadowkv', dtype: env.dtype, backend: env.backend, maxTokens: 128, options: SPARSE })) as ShadowKVCache;
      delete process.env.SHADOWKV_CUDA_SELECT_BLOCKS;
      const oracle = new OracleShadowKV(spec, SPARSE, 1);
      const errors = compare(cache, oracle, inputs(spec, env.dtype, 70, 3, x, 5, true), (step) => {
        for (let h = 0; h < spec.kvHeads; h++) expect(cache.selection(0, 0, h), `q ${x.q}, k ${x.k}: step ${step}, head ${h}`).toEqual(oracle.lastSelection(0, h));
      });
      delete process.env.SHADOWKV_CUDA_SELECT_NEAR;
      within(errors, env, `q ${x.q}, k ${x.k}`);
      cache.dispose();
    }
  });
}, (e) => e.dtype === 'f32');

// Five chunks whose logits pass f32 only through their products (d 64 and 128, the widths whose bf16
// logits run on the tensor cores): queries 2^66 in dims 60 and
// 61 and 1 in 62 and 63 (0 elsewhere); the chunks' keys 2^64 and -(2^64 - 2^56) in dims 60 and 61, so
// the products are +-2^130, past FLT_MAX, and their sum 2^122 (a logit of 2^119). Four "rivals"
// (the four chunks before it) add 2^90 in dim 62, the spike 2^90 in dims 62 and 63: in
// float64 the spike's logit is the largest by 2^87, but in f32 2^90 or 2^91 is far below the last
// bit of 2^122, so whether the sums round to nearest or toward zero (as the tensor cores add), all
// five come out the same, and the tie rule takes the four rivals. The f32 path overflows (a NaN
// logit) and scores the head in float64; the CUDA tensor cores (bf16 landmarks) scale the queries
// down, so nothing overflows there, and the spike was left out. The fused step now compares each
// head's landmark bound with its queries first (logits_mma.cuh), so the bound must be right after
// every way landmarks are written: a prefill, a restore, a continuation prefill's compaction and the
// step's own compaction. (Products of 1e40 that cancel exactly, with 1e25 beside them, came out right
// on an H100 without the bound: its tensor cores kept those sums; bench/NOTES.md v58.)
// NOTE: every other chunk's logit is ~1e20 (keys 1 + |N| in dim 60, 0 in 61). Half-style RoPE (theta
// 1e12) turns dims 60-63 by < 1e-8 rad over these positions and pairs them with dims 28-31 (d 64) or
// 124-127 (d 128), so the large keys and queries keep their bits, and what it turns into the pairs
// adds ~1e21 to a logit at most.
const wideSpec = (headDim: number): ModelSpec => ({ layers: 1, queryHeads: 4, kvHeads: 2, headDim, rope: { theta: 1e12 } });
/** Chunks [spike - 4, spike) are the rivals; every other chunk but the spike has a logit ~1e20. */
function spikeInputs(dtype: DType, d: number, S: number, steps: number, spike: number) {
  const rand = rng(21);
  const big = [2 ** 64, -(2 ** 64 - 2 ** 56)];
  const keys = (t0: number, n: number) => {
    const k = new Float64Array(2 * n * d);
    for (let h = 0; h < 2; h++) for (let i = 0; i < n; i++) {
      const row = k.subarray((h * n + i) * d, (h * n + i + 1) * d);
      const chunk = Math.floor((t0 + i) / 4);
      row.set(randn(60, rand));
      if (chunk === spike) row.set([...big, 2 ** 90, 2 ** 90], 60);
      else if (chunk >= spike - 4 && chunk < spike) row.set([...big, 2 ** 90, 0], 60);
      else row.set([1 + Math.abs(randn(1, rand)[0]!), 0, ...randn(2, rand)], 60);
    }
    return makeTensor(k, [1, 2, n, d], dtype).t;
  };
  const values = (n: number) => makeTensor(randn(2 * n * d, rand), [1, 2, n, d], dtype).t;
  const q = new Float64Array(4 * d);
  for (let j = 0; j < 4; j++) q.set([2 ** 66, 2 ** 66, 1, 1], j * d + 60);
  const query = makeTensor(q, [1, 4, 1, d], dtype).t;
  const tokens = Array.from({ length: steps }, (_, i) => ({ query, key: keys(S + i, 1), value: values(1) }));
  // The prompt's tokens [t0, t0 + n), for a prefill or one part of a continuation.
  const part = (t0: number, n: number) => ({ keys: keys(t0, n), values: values(n) });
  return { part, tokens };
}

forEachEnv('numerics: a landmark logit past f32 in the fused step', (env) => {
  const options = { ...SPARSE, rank: 32 };
  const create = async (d: number) => (await createCache({ spec: wideSpec(d), policy: 'shadowkv', dtype: env.dtype, backend: env.backend, maxTokens: 160, options })) as ShadowKVCache;
  // Each way the five chunks' landmarks get written, alone: no other writer has seen a large one.
  // [writer, the spike chunk, decode steps, the first step that must select it, the cache to decode
  // from the inputs and a maker of empty caches]
  type Make = () => Promise<ShadowKVCache>;
  const writers: [string, number, number, number, (x: ReturnType<typeof spikeInputs>, make: Make) => Promise<ShadowKVCache>][] = [
    ['a prefill', 10, 3, 0, async (x, make) => { const c = await make(); c.prefill(0, x.part(0, 70)); return c; }],
    ['a restore', 10, 3, 0, async (x, make) => {
      const c = await make();
      c.prefill(0, x.part(0, 70));
      const saved = c.save();
      c.dispose();
      return (await loadCache(saved, { backend: env.backend })) as ShadowKVCache;
    }],
    // Chunks 8-14 (tokens 32-59) reach the store by the second part's compaction, outside a step.
    ['a continuation prefill', 14, 3, 0, async (x, make) => { const c = await make(); c.prefill(0, x.part(0, 40)); c.prefill(0, x.part(40, 30)); return c; }],
    // Chunks 18-22 (tokens 72-91) come from decode steps 2-21 and reach the store by the step's compaction.
    ['the step\'s compaction', 22, 44, 40, async (x, make) => { const c = await make(); c.prefill(0, x.part(0, 70)); return c; }],
  ];
  it.each([64, 128].flatMap((width) => writers.map((w) => [width, ...w] as const)))('d %i: the spike is selected over its tied rivals after %s', async (width, label, spike, steps, from, cache) => {
    const x = spikeInputs(env.dtype, width, 70, steps, spike);
    const c = await cache(x, () => create(width));
    x.tokens.forEach((t, step) => {
      expect(toFloat32(c.decode(0, t)).every(Number.isFinite), `step ${step}: output finite`).toBe(true);
      if (step >= from) for (let h = 0; h < 2; h++) expect(c.selection(0, 0, h), `step ${step}, head ${h}`).toContain(spike);
    });
    if (label.includes('step')) expect(c.stats().compactions, 'the step compacted').toBeGreaterThan(0);
    c.dispose();
  });
}, (e) => e.dtype !== 'f16');

// Were fine when probed (kept so that they stay so): the factorization of rank-deficient keys.
forEachEnv('numerics: rank-deficient keys compress exactly', (env) => {
  it('all-zero, rank-1, duplicate and subnormal keys: shadowkv at rank 8 matches full attention', async () => {
    const S = 40;
    const rand = rng(9);
    const u = randn(S + 3, rand);
    const w = randn(32, rand);
    const kinds: [string, (t: number, j: number) => number][] = [
      ['zero', () => 0], ['rank 1', (t, j) => u[t]! * w[j]!], ['one token repeated', (_, j) => w[j]!], ['subnormal', (t, j) => 1e-40 * Math.sign(u[t]! * w[j]!)],
    ];
    for (const [label, key] of kinds) {
      const keys = (t0: number, n: number) => {
        const x = new Float64Array(2 * n * 16);
        for (let h = 0; h < 2; h++) for (let t = 0; t < n; t++) for (let e = 0; e < 16; e++) x[(h * n + t) * 16 + e] = key(t0 + t, h * 16 + e);
        return makeTensor(x, [1, 2, n, 16], env.dtype);
      };
      const run = inputs(spec, env.dtype, S, 3, { q: 1, k: 1, v: 1 }, 3);
      run.prompt.k = keys(0, S);
      run.tokens.forEach((x, i) => (x.k = keys(S + i, 1)));
      const cache = await createCache({ spec, policy: 'shadowkv', dtype: env.dtype, backend: env.backend, maxTokens: 64, options: { ...(ATTEND_ALL[1]![1] as object), rank: 8 } });
      within(compare(cache, new OracleFullKV(spec, 1), run), env, label);
      expect(cache.stats().compressions, label).toBe(1);
      cache.dispose();
    }
  });
});
