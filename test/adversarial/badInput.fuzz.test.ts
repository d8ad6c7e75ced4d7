// Generated bad inputs to every public call: each is a ShadowKVError with a code of codes.ts (never a
// TypeError, RangeError or wasm RuntimeError), and a rejected call leaves the cache byte-identical.
// Also: every call after dispose(), values that do not fit the storage dtype, and option limits.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createCache, estimateMemory, FullKVCache, loadCache, ropeFrequencies, ShadowKVCache, type Cache, type DType, type Tensor,
} from '../../packages/shadowkv/src/backend.js';
import { announceSeed, isTyped, NO_ERROR, openSnapshot, rejection, sameBytes, showError, thrown } from '../helpers/adversarial.js';
import { makeTensor, randn, rng } from '../helpers/data.js';
import { forEachEnv, type TestEnv } from '../envs.js';

const SEED = announceSeed('test/adversarial/badInput.fuzz.test.ts');
// SKV_SURVEY=1: instead of sampling, run every enumerated case and list every one that fails.
const SURVEY = process.env.SKV_SURVEY === '1';
const counts = { badInputs: 0, afterDispose: 0 };

const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 };
const MAX_TOKENS = 160;
const { queryHeads: Hq, kvHeads: Hkv, headDim: d } = spec;

/** Largest finite value of a storage dtype. */
const STORAGE_MAX: Record<DType, number> = { f32: 3.4028234663852886e38, f16: 65504, bf16: 3.3895313892515355e38 };

const tensor = (shape: number[], rand: () => number, dtype: DType = 'f32', scale = 1): Tensor =>
  makeTensor(randn(shape.reduce((a, b) => a * b, 1), rand, scale), shape, dtype).t;

interface Fixture {
  env: TestEnv;
  policy: 'shadowkv' | 'full';
  cache: Cache;
  /** Row lengths and the first exact token of each row (after its compressed prefix). */
  lengths: number[];
  tailStart: number[];
}

/**
 * Row 0: a 100-token prompt, compressed and compacted by 20 decode steps; row 1: a 60-token prompt
 * (due for compression, still dense), so that a bad call that compresses changes the cache.
 */
async function fixture(env: TestEnv, policy: 'shadowkv' | 'full'): Promise<Fixture> {
  const rand = rng(SEED + 7);
  const cache: Cache = policy === 'shadowkv'
    ? await createCache({ spec, policy, batch: 2, dtype: env.dtype, backend: env.backend, maxTokens: MAX_TOKENS, options })
    : await createCache({ spec, policy, batch: 2, dtype: env.dtype, backend: env.backend, maxTokens: MAX_TOKENS });
  for (let l = 0; l < spec.layers; l++) cache.prefill(l, { keys: tensor([1, Hkv, 100, d], rand), values: tensor([1, Hkv, 100, d], rand), sequences: [0] });
  for (let t = 0; t < 20; t++) {
    for (let l = 0; l < spec.layers; l++) cache.decode(l, { query: tensor([1, Hq, 1, d], rand), key: tensor([1, Hkv, 1, d], rand), value: tensor([1, Hkv, 1, d], rand) }, { sequences: [0] });
  }
  for (let l = 0; l < spec.layers; l++) cache.prefill(l, { keys: tensor([1, Hkv, 60, d], rand), values: tensor([1, Hkv, 60, d], rand), sequences: [1] });
  return { env, policy, cache, ...rowInfo(cache) };
}

function rowInfo(cache: Cache): { lengths: number[]; tailStart: number[] } {
  const layers = openSnapshot(cache.save()).content.layers as { length: number; store?: { tokens: number } }[][];
  return {
    lengths: layers[0]!.map((st) => st.length),
    tailStart: [0, 1].map((s) => Math.max(...layers.map((row) => row[s]!.store?.tokens ?? 0))),
  };
}

/**
 * The call must throw a typed error and leave the cache byte-identical. A cache the call changed
 * (or disposed) is replaced by its earlier snapshot so that later cases start from the same state.
 */
async function expectRejected(fx: Fixture, label: string, call: (c: Cache) => unknown): Promise<void> {
  counts.badInputs += 1;
  const before = fx.cache.save();
  const err = await outcome(() => call(fx.cache));
  const problems: string[] = [];
  if (!isTyped(err)) problems.push(`expected a ShadowKVError with a code of codes.ts, got ${showError(err)}`);
  const after = thrown(() => {
    if (!sameBytes(fx.cache.save(), before)) throw new Error('changed');
  });
  if (after !== NO_ERROR) {
    problems.push(after instanceof Error && after.message === 'changed' ? 'the cache changed' : `save() afterwards threw ${showError(after)}`);
    thrown(() => fx.cache.dispose());
    fx.cache = await loadCache(before, { backend: fx.env.backend });
  }
  if (problems.length) throw new Error(`[${fx.env.name} ${fx.policy}] ${label}: ${problems.join('; ')}`);
}

/** What a call threw (or its promise rejected with), else NO_ERROR; a cache it made is disposed. */
async function outcome(call: () => unknown): Promise<unknown> {
  let made: unknown;
  let err = thrown(() => (made = call()));
  if (err === NO_ERROR && made instanceof Promise) err = await rejection(async () => (made = await made));
  if (err === NO_ERROR && made && typeof (made as Cache).dispose === 'function') thrown(() => (made as Cache).dispose());
  return err;
}

/** A call to a function that makes no cache (estimateMemory, createCache, constructors, loadCache): a typed error. */
async function expectTypedError(env: TestEnv, label: string, call: () => unknown): Promise<void> {
  counts.badInputs += 1;
  const err = await outcome(call);
  if (!isTyped(err)) throw new Error(`[${env.name}] ${label}: expected a ShadowKVError with a code of codes.ts, got ${showError(err)}`);
}

/** Survey mode: every combination of `axes` through `body`, the failures listed together. */
async function survey(axes: number[], body: (...ix: number[]) => Promise<void>): Promise<void> {
  const failures: string[] = [];
  const walk = async (prefix: number[]): Promise<void> => {
    if (prefix.length === axes.length) {
      const err = await rejection(() => body(...prefix));
      if (err !== NO_ERROR) failures.push((err as Error).message);
      return;
    }
    for (let i = 0; i < axes[prefix.length]!; i++) await walk([...prefix, i]);
  };
  await walk([]);
  expect(failures).toEqual([]);
}

// ---- bad tensors ----

type TensorCase = [string, (good: Tensor, r: number) => unknown];
const sym = () => Symbol('x');
const withShape = (g: Tensor, shape: unknown) => ({ ...g, shape });
const dimAt = (g: Tensor, r: number, v: unknown) => withShape(g, g.shape.map((s, i) => (i === r % g.shape.length ? v : s)));
const poisoned = (g: Tensor, r: number, v: number) => {
  const data = g.data.slice();
  data[r % data.length] = v;
  return { ...g, data };
};

const BAD_TENSORS: TensorCase[] = [
  ['shape {}', (g) => withShape(g, {})],
  ['shape "abcd"', (g) => withShape(g, 'abcd')],
  ['shape 5', (g) => withShape(g, 5)],
  ['shape null', (g) => withShape(g, null)],
  ['shape a Set', (g) => withShape(g, new Set(g.shape))],
  ['shape an array-like object', (g) => withShape(g, { length: 4, 0: g.shape[0], 1: g.shape[1], 2: g.shape[2], 3: g.shape[3] })],
  ['shape holding a Symbol', (g, r) => dimAt(g, r, sym())],
  ['shape holding an object without toString', (g, r) => dimAt(g, r, Object.create(null))],
  ['shape of rank 3', (g) => withShape(g, g.shape.slice(1))],
  ['shape of rank 5', (g) => withShape(g, [...g.shape, 1])],
  ['shape []', (g) => withShape(g, [])],
  ['a negative dim', (g, r) => dimAt(g, r, -g.shape[r % 4]!)],
  ['a fractional dim', (g, r) => dimAt(g, r, g.shape[r % 4]! + 0.5)],
  ['a zero dim', (g, r) => dimAt(g, r, 0)],
  ['a NaN dim', (g, r) => dimAt(g, r, NaN)],
  ['an Infinity dim', (g, r) => dimAt(g, r, Infinity)],
  ['a dim of 2^31', (g, r) => dimAt(g, r, 2 ** 31)],
  ['a dim of 2^53', (g, r) => dimAt(g, r, 2 ** 53)],
  ['a dim as a string', (g, r) => dimAt(g, r, String(g.shape[r % 4]))],
  ['a dim as a bigint', (g, r) => dimAt(g, r, BigInt(g.shape[r % 4]!))],
  ['a head dim off by one, data to match', (g) => {
    const shape = [g.shape[0]!, g.shape[1]! + 1, g.shape[2]!, g.shape[3]!];
    return { ...g, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)), dtype: 'f32' };
  }],
  ['dtype "f64"', (g) => ({ ...g, dtype: 'f64' })],
  ['dtype "F32"', (g) => ({ ...g, dtype: 'F32' })],
  ['dtype ""', (g) => ({ ...g, dtype: '' })],
  ['dtype "float32"', (g) => ({ ...g, dtype: 'float32' })],
  ['dtype a Symbol', (g) => ({ ...g, dtype: sym() })],
  ['dtype 5', (g) => ({ ...g, dtype: 5 })],
  ['dtype undefined', (g) => ({ ...g, dtype: undefined })],
  ['dtype ["f32"]', (g) => ({ ...g, dtype: ['f32'] })],
  ['dtype an object without toString', (g) => ({ ...g, dtype: Object.create(null) })],
  ['data a Float64Array', (g) => ({ ...g, data: Float64Array.from(g.data) })],
  ['data an Int16Array', (g) => ({ ...g, data: Int16Array.from(g.data) })],
  ['data a Uint8Array', (g) => ({ ...g, data: Uint8Array.from(g.data) })],
  ['data an Int32Array', (g) => ({ ...g, data: Int32Array.from(g.data) })],
  ['data a plain Array', (g) => ({ ...g, data: Array.from(g.data) })],
  ['data {}', (g) => ({ ...g, data: {} })],
  ['data an ArrayBuffer', (g) => ({ ...g, data: g.data.buffer.slice(0) })],
  ['data a DataView', (g) => ({ ...g, data: new DataView(g.data.buffer.slice(0)) })],
  ['data an object without a prototype', (g) => ({ ...g, data: Object.create(null) })],
  ['data a string', (g) => ({ ...g, data: 'abc' })],
  ['data null', (g) => ({ ...g, data: null })],
  ['Float32Array data labelled bf16', (g) => ({ ...g, data: new Float32Array(g.data.length), dtype: 'bf16' })],
  ['Float32Array data labelled f16', (g) => ({ ...g, data: new Float32Array(g.data.length), dtype: 'f16' })],
  ['Uint16Array data labelled f32', (g) => ({ ...g, data: new Uint16Array(g.data.length), dtype: 'f32' })],
  ['data one element short', (g) => ({ ...g, data: g.data.slice(0, -1) })],
  ['data one element long', (g) => ({ ...g, data: Float32Array.from([...g.data, 0]) })],
  ['data empty', (g) => ({ ...g, data: g.data.slice(0, 0) })],
  ['data twice as long', (g) => ({ ...g, data: Float32Array.from([...g.data, ...g.data]) })],
  ['NaN', (g, r) => poisoned(g, r, NaN)],
  ['Infinity', (g, r) => poisoned(g, r, Infinity)],
  ['-Infinity', (g, r) => poisoned(g, r, -Infinity)],
  ['tensor null', () => null],
  ['tensor undefined', () => undefined],
  ['tensor 5', () => 5],
  ['tensor "x"', () => 'x'],
  ['tensor []', () => []],
  ['tensor a Symbol', () => sym()],
];

/** 16-bit patterns that are not finite; every tensor of the call is made 16-bit. */
const NON_FINITE_BITS: [DType, number][] = [
  ['f16', 0x7c00], ['f16', 0xfc00], ['f16', 0x7e00], ['f16', 0x7c01], ['f16', 0xffff],
  ['bf16', 0x7f80], ['bf16', 0xff80], ['bf16', 0x7fc0], ['bf16', 0x7f81], ['bf16', 0xffff],
];

type Role = 'keys' | 'values' | 'queries' | 'query' | 'key' | 'value';
const PREFILL_ROLES: Role[] = ['keys', 'values', 'queries'];
const DECODE_ROLES: Role[] = ['query', 'key', 'value'];

/** Valid inputs of a prefill (row 1, 5 tokens) or a decode (every row), in `dtype`. */
function goodInputs(role: Role, rand: () => number, dtype: DType = 'f32'): Record<string, Tensor> {
  if (PREFILL_ROLES.includes(role)) return { keys: tensor([1, Hkv, 5, d], rand, dtype), values: tensor([1, Hkv, 5, d], rand, dtype), queries: tensor([1, Hq, 5, d], rand, dtype) };
  return { query: tensor([2, Hq, 1, d], rand, dtype), key: tensor([2, Hkv, 1, d], rand, dtype), value: tensor([2, Hkv, 1, d], rand, dtype) };
}

function callWith(role: Role, inputs: Record<string, unknown>): (c: Cache) => unknown {
  return PREFILL_ROLES.includes(role)
    ? (c) => c.prefill(0, { ...inputs, sequences: [1] } as never)
    : (c) => c.decode(1, inputs as never);
}

/**
 * A value past the storage dtype's range: values above its max; keys whose RoPE pair is rotated past
 * it (both elements at 0.99 of the max, at a position whose rotation overflows).
 */
function overflowInputs(fx: Fixture, role: Role, rand: () => number): Record<string, unknown> | undefined {
  const max = STORAGE_MAX[fx.env.dtype];
  if (fx.env.dtype === 'f32') return undefined;
  const inputs = goodInputs(role, rand);
  const t = inputs[role]!;
  const data = t.data as Float32Array;
  if (role === 'values' || role === 'value') {
    data[7] = fx.env.dtype === 'f16' ? 70000 : 3.4e38;
    return inputs;
  }
  if (role === 'queries' || role === 'query') return undefined;
  // Keys: find a token and pair whose rotation overflows, at the row's position.
  const invFreq = ropeFrequencies(d, spec.rope);
  const a = 0.99 * max;
  const tokens = t.shape[2]!;
  const row = role === 'keys' ? 1 : 0;
  for (let tok = 0; tok < tokens; tok++) {
    const p = fx.lengths[row]! + tok;
    for (let i = 0; i < d / 2; i++) {
      const th = p * invFreq[i]!;
      const rotated = Math.max(Math.abs(a * Math.cos(th) - a * Math.sin(th)), Math.abs(a * Math.sin(th) + a * Math.cos(th)));
      if (rotated > max * 1.01) {
        data[tok * d + i] = a; // batch row 0 (decode: row 0; prefill: the one input row), kv head 0
        data[tok * d + i + d / 2] = a;
        return inputs;
      }
    }
  }
  return undefined;
}

// ---- other arguments ----

const BAD_LAYERS: [string, () => unknown][] = [
  ['a Symbol', sym], ['"0"', () => '0'], ['"1"', () => '1'], ['NaN', () => NaN], ['-1', () => -1], ['1.5', () => 1.5], ['2 (= layers)', () => 2],
  ['2^31', () => 2 ** 31], ['Infinity', () => Infinity], ['null', () => null], ['{}', () => ({})], ['[0]', () => [0]], ['0n', () => 0n],
  ['true', () => true], ['an object without toString', () => Object.create(null)], ['new Number(0)', () => new Number(0)],
];

const BAD_INDICES: [string, () => unknown][] = [
  ['-1', () => -1], ['2 (= batch)', () => 2], ['0.5', () => 0.5], ['NaN', () => NaN], ['"0"', () => '0'], ['null', () => null], ['a Symbol', sym],
  ['{}', () => ({})], ['2^31', () => 2 ** 31], ['Infinity', () => Infinity], ['true', () => true], ['0n', () => 0n], ['an object without toString', () => Object.create(null)],
];

/** [label, sequences, input rows]; the last three are fine as `compress` layers or rows (it takes any distinct subset). */
const BAD_SEQUENCES: [string, () => unknown, number][] = [
  ['{}', () => ({}), 1], ['5', () => 5, 1], ['"1"', () => '1', 1], ['a Set', () => new Set([1]), 1], ['an array-like object', () => ({ length: 1, 0: 1 }), 1],
  ['[1, 1]', () => [1, 1], 2], ['[2]', () => [2], 1], ['[-1]', () => [-1], 1], ['[0.5]', () => [0.5], 1], ['[NaN]', () => [NaN], 1], ['["1"]', () => ['1'], 1],
  ['[Symbol]', () => [sym()], 1], ['[null]', () => [null], 1],
  ['[1, 0, 1]', () => [1, 0, 1], 3], ['[an object without toString]', () => [Object.create(null)], 1],
  ['[] for one input row', () => [], 1], ['a hole', () => [, 1], 2], ['[0, 1] for one input row', () => [0, 1], 1],
];
const NOT_BAD_FOR_COMPRESS = new Set(['[] for one input row', 'a hole', '[0, 1] for one input row']);

type Case = { label: string; call: (c: Cache) => unknown; policies?: ('shadowkv' | 'full')[] };

function layerCases(): Case[] {
  return BAD_LAYERS.flatMap(([name, v]): Case[] => [
    { label: `prefill with layer ${name}`, call: (c) => c.prefill(v() as never, { keys: tensor([1, Hkv, 3, d], rng(1)), values: tensor([1, Hkv, 3, d], rng(2)), sequences: [1] }) },
    { label: `decode with layer ${name}`, call: (c) => c.decode(v() as never, goodInputs('query', rng(3)) as never) },
    { label: `length(0, layer ${name})`, call: (c) => c.length(0, v() as never) },
    { label: `selection(layer ${name}, 0, 0)`, call: (c) => (c as ShadowKVCache).selection(v() as never, 0, 0), policies: ['shadowkv'] },
    { label: `compress({ layers: [${name}] })`, call: (c) => (c as ShadowKVCache).compress({ layers: [v() as never] }), policies: ['shadowkv'] },
  ]);
}

function indexCases(): Case[] {
  return BAD_INDICES.flatMap(([name, v]): Case[] => [
    { label: `length(${name})`, call: (c) => c.length(v() as never) },
    { label: `reset(${name})`, call: (c) => c.reset(v() as never) },
    { label: `crop(${name}, 1)`, call: (c) => c.crop(v() as never, 1) },
    { label: `selection(0, ${name}, 0)`, call: (c) => (c as ShadowKVCache).selection(0, v() as never, 0), policies: ['shadowkv'] },
    { label: `selection(0, 0, kv head ${name})`, call: (c) => (c as ShadowKVCache).selection(0, 0, v() as never), policies: ['shadowkv'] },
    { label: `compress({ sequences: [${name}] })`, call: (c) => (c as ShadowKVCache).compress({ sequences: [v() as never] }), policies: ['shadowkv'] },
  ]);
}

function sequenceCases(): Case[] {
  return BAD_SEQUENCES.flatMap(([name, v, rows]): Case[] => [
    { label: `prefill with sequences ${name}`, call: (c) => c.prefill(0, { keys: tensor([rows, Hkv, 3, d], rng(4)), values: tensor([rows, Hkv, 3, d], rng(5)), sequences: v() as never }) },
    { label: `decode with sequences ${name}`, call: (c) => c.decode(0, { query: tensor([rows, Hq, 1, d], rng(6)), key: tensor([rows, Hkv, 1, d], rng(7)), value: tensor([rows, Hkv, 1, d], rng(8)) }, { sequences: v() as never }) },
    ...(NOT_BAD_FOR_COMPRESS.has(name) ? [] : ([
      { label: `compress({ sequences: ${name} })`, call: (c) => (c as ShadowKVCache).compress({ sequences: v() as never }), policies: ['shadowkv'] },
      { label: `compress({ layers: ${name} })`, call: (c) => (c as ShadowKVCache).compress({ layers: v() as never }), policies: ['shadowkv'] },
    ] as Case[])),
  ]);
}

const n = 2 * Hq * d;
const BAD_OUT: [string, () => unknown][] = [
  ['a Float64Array', () => new Float64Array(n)], ['a Uint16Array for f32 inputs', () => new Uint16Array(n)], ['one element short', () => new Float32Array(n - 1)],
  ['one element long', () => new Float32Array(n + 1)], ['empty', () => new Float32Array(0)], ['a plain Array', () => Array.from({ length: n }, () => 0)], ['{}', () => ({})],
  ['an object without a prototype', () => Object.create(null)], ['a string', () => 'out'], ['a Symbol', sym], ['null', () => null], ['5', () => 5],
  ['a DataView', () => new DataView(new ArrayBuffer(4 * n))], ['an ArrayBuffer', () => new ArrayBuffer(4 * n)],
];

function outCases(): Case[] {
  return BAD_OUT.map(([name, v]) => ({ label: `decode with out ${name}`, call: (c: Cache) => c.decode(0, goodInputs('query', rng(9)) as never, { out: v() as never }) }));
}

function cropCases(fx: Fixture): Case[] {
  const [l0, l1] = fx.lengths as [number, number];
  const lengths: [string, unknown][] = [
    ['-1', -1], [`${l1 + 1} (one past the end)`, l1 + 1], ['2^53', 2 ** 53], ['NaN', NaN], ['Infinity', Infinity], ['0.5', 0.5], ['"3"', '3'],
    ['null', null], ['undefined', undefined], ['{}', {}], ['0n', 0n], ['a Symbol', Symbol('x')], ['an object without toString', Object.create(null)],
  ];
  const cases: Case[] = lengths.map(([name, v]) => ({ label: `crop(1, ${name})`, call: (c) => c.crop(1, v as never) }));
  if (fx.tailStart[0]! > 0) cases.push({ label: `crop(0, ${fx.tailStart[0]! - 1}): below the compressed prefix`, call: (c) => c.crop(0, fx.tailStart[0]! - 1) });
  if (fx.tailStart[0]! > 0) cases.push({ label: 'crop(0, 0): below the compressed prefix', call: (c) => c.crop(0, 0) });
  cases.push({ label: `crop(0, ${l0 + 1}) past the end`, call: (c) => c.crop(0, l0 + 1) });
  return cases;
}

function capacityCases(fx: Fixture): Case[] {
  const room = MAX_TOKENS - fx.lengths[1]!;
  return [
    { label: `prefill of ${room + 1} tokens into a row with room for ${room}`, call: (c) => c.prefill(0, { keys: tensor([1, Hkv, room + 1, d], rng(10)), values: tensor([1, Hkv, room + 1, d], rng(11)), sequences: [1] }) },
    { label: `prefill of ${MAX_TOKENS + 1} tokens into both rows`, call: (c) => c.prefill(1, { keys: tensor([2, Hkv, MAX_TOKENS + 1, d], rng(12)), values: tensor([2, Hkv, MAX_TOKENS + 1, d], rng(13)) }) },
  ];
}

function compressCases(): Case[] {
  const bad: [string, unknown][] = [
    ['null', null], ['5', 5], ['"x"', 'x'], ['{ layers: "ab" }', { layers: 'ab' }], ['{ layers: {} }', { layers: {} }], ['{ layers: 5 }', { layers: 5 }],
    ['{ layers: [0, 0] } (repeated)', { layers: [0, 0] }], ['{ sequences: [1, 1] } (repeated)', { sequences: [1, 1] }], ['{ sequences: new Set([1]) }', { sequences: new Set([1]) }],
    ['{ layers: [2] }', { layers: [2] }], ['{ sequences: [2] }', { sequences: [2] }], ['{ onProgress: 5 }', { onProgress: 5 }], ['{ onProgress: "x" }', { onProgress: 'x' }],
    ['{ onProgress: {} }', { onProgress: {} }], ['{ layrs: [0] } (unknown key)', { layrs: [0] }],
  ];
  return bad.map(([name, v]) => ({ label: `compress(${name})`, call: (c: Cache) => (c as ShadowKVCache).compress(v as never), policies: ['shadowkv'] }));
}

// ---- calls that make no cache ----

const goodSpec = () => ({ layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } });
const BAD_SPECS: [string, () => unknown][] = [
  ['null', () => null], ['5', () => 5], ['{}', () => ({})], ['layers 0', () => ({ ...goodSpec(), layers: 0 })], ['layers -1', () => ({ ...goodSpec(), layers: -1 })],
  ['layers 1.5', () => ({ ...goodSpec(), layers: 1.5 })], ['layers "2"', () => ({ ...goodSpec(), layers: '2' })], ['layers NaN', () => ({ ...goodSpec(), layers: NaN })],
  ['queryHeads 5 (not a multiple of kvHeads)', () => ({ ...goodSpec(), queryHeads: 5 })], ['headDim 15', () => ({ ...goodSpec(), headDim: 15 })],
  ['headDim 0', () => ({ ...goodSpec(), headDim: 0 })], ['no rope', () => ({ ...goodSpec(), rope: undefined })], ['rope {}', () => ({ ...goodSpec(), rope: {} })],
  ['rope.theta 0', () => ({ ...goodSpec(), rope: { theta: 0 } })], ['rope.theta NaN', () => ({ ...goodSpec(), rope: { theta: NaN } })],
  ['rope.theta Infinity', () => ({ ...goodSpec(), rope: { theta: Infinity } })], ['rope.theta "x"', () => ({ ...goodSpec(), rope: { theta: 'x' } })],
  ['rope.style "x"', () => ({ ...goodSpec(), rope: { theta: 10000, style: 'x' } })], ['rope.style a Symbol', () => ({ ...goodSpec(), rope: { theta: 10000, style: sym() } })],
  ['rope.scaling with factor 0', () => ({ ...goodSpec(), rope: { theta: 10000, scaling: { factor: 0, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64 } } })],
  ['scale 0', () => ({ ...goodSpec(), scale: 0 })], ['scale NaN', () => ({ ...goodSpec(), scale: NaN })], ['scale Infinity', () => ({ ...goodSpec(), scale: Infinity })],
  ['rope a Symbol', () => ({ ...goodSpec(), rope: sym() })],
  ['scale 1e38 (scores overflow f32)', () => ({ ...goodSpec(), scale: 1e38 })],
  ['rope.scaling factor 1e-310 (frequencies overflow)', () => ({ ...goodSpec(), rope: { theta: 10000, scaling: { factor: 1e-310, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64 } } })],
  // A misspelt field would leave its default in force: other attention, silently.
  ['scal 0.01 (unknown key)', () => ({ ...goodSpec(), scal: 0.01 })], ['rope.styel (unknown key)', () => ({ ...goodSpec(), rope: { theta: 10000, styel: 'interleaved' } })],
  ['rope.scaling.factr (unknown key)', () => ({ ...goodSpec(), rope: { theta: 10000, scaling: { factr: 8, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64 } } })],
];
const BAD_CACHE_OPTIONS: [string, Record<string, unknown>][] = [
  ['batch 0', { batch: 0 }], ['batch -1', { batch: -1 }], ['batch 1.5', { batch: 1.5 }], ['batch "2"', { batch: '2' }], ['batch NaN', { batch: NaN }],
  ['dtype "f64"', { dtype: 'f64' }], ['dtype a Symbol', { dtype: sym() }], ['maxTokens 0', { maxTokens: 0 }], ['maxTokens 1.5', { maxTokens: 1.5 }], ['maxTokens NaN', { maxTokens: NaN }],
];
const BAD_SHADOWKV_OPTIONS: [string, Record<string, unknown>][] = [
  ['rank 0', { rank: 0 }], ['rank 1.5', { rank: 1.5 }], ['rank 33 (> kvHeads * headDim)', { rank: 33 }], ['rank "8"', { rank: '8' }], ['budget 30 with chunkSize 8', { budget: 30, chunkSize: 8 }],
  ['chunkSize 0', { chunkSize: 0 }], ['localTokens -1', { localTokens: -1 }], ['scoreScale 0', { scoreScale: 0 }], ['scoreScale NaN', { scoreScale: NaN }],
  ['scoreScale a Symbol', { scoreScale: sym() }], ['denseThreshold 0', { denseThreshold: 0 }], ['maxRecentTokens 1 (< chunkSize)', { maxRecentTokens: 1 }],
  ['hostPageChunks 0', { hostPageChunks: 0 }], ['svdPowerIters -1', { svdPowerIters: -1 }], ['an unknown option', { rnak: 8 }],
];

function configCases(env: TestEnv): [string, () => unknown][] {
  const backend = env.backend;
  const cases: [string, () => unknown][] = [];
  for (const [name, s] of BAD_SPECS) {
    cases.push([`createCache with spec ${name}`, () => createCache({ spec: s() as never, backend })]);
    cases.push([`new FullKVCache with spec ${name}`, () => new FullKVCache({ spec: s() as never, backend })]);
    cases.push([`new ShadowKVCache with spec ${name}`, () => new ShadowKVCache({ spec: s() as never, backend })]);
    cases.push([`estimateMemory with spec ${name}`, () => estimateMemory({ spec: s() as never, tokens: 100 })]);
  }
  for (const [name, o] of BAD_CACHE_OPTIONS) {
    cases.push([`createCache with ${name}`, () => createCache({ spec: goodSpec(), backend, ...o } as never)]);
    cases.push([`new FullKVCache with ${name}`, () => new FullKVCache({ spec: goodSpec(), backend, ...o } as never)]);
    cases.push([`estimateMemory with ${name}`, () => estimateMemory({ spec: goodSpec(), tokens: 100, ...o } as never)]);
  }
  for (const [name, o] of BAD_SHADOWKV_OPTIONS) {
    cases.push([`createCache with option ${name}`, () => createCache({ spec: goodSpec(), backend, options: o } as never)]);
    cases.push([`new ShadowKVCache with option ${name}`, () => new ShadowKVCache({ spec: goodSpec(), backend, ...o } as never)]);
    cases.push([`estimateMemory with option ${name}`, () => estimateMemory({ spec: goodSpec(), tokens: 100, options: o } as never)]);
  }
  const whole: [string, () => unknown][] = [
    ['createCache(null)', () => createCache(null as never)], ['createCache(5)', () => createCache(5 as never)], ['createCache({})', () => createCache({} as never)],
    ['createCache with an unknown key', () => createCache({ spec: goodSpec(), backend, polcy: 'full' } as never)],
    ['createCache with policy "nope"', () => createCache({ spec: goodSpec(), backend, policy: 'nope' })], ['createCache with policy 5', () => createCache({ spec: goodSpec(), backend, policy: 5 as never })],
    ['createCache with backend "nope"', () => createCache({ spec: goodSpec(), backend: 'nope' })], ['createCache with backend 5', () => createCache({ spec: goodSpec(), backend: 5 as never })],
    ['createCache with options 5', () => createCache({ spec: goodSpec(), backend, options: 5 as never })],
    ['createCache full with shadowkv options', () => createCache({ spec: goodSpec(), backend, policy: 'full', options: { rank: 8 } as never })],
    ['new FullKVCache(null)', () => new FullKVCache(null as never)], ['new FullKVCache(5)', () => new FullKVCache(5 as never)],
    ['new ShadowKVCache(null)', () => new ShadowKVCache(null as never)], ['new ShadowKVCache(5)', () => new ShadowKVCache(5 as never)],
    ['new ShadowKVCache("x")', () => new ShadowKVCache('x' as never)], ['new ShadowKVCache(undefined)', () => new ShadowKVCache(undefined as never)],
    ['new FullKVCache with a ShadowKV option', () => new FullKVCache({ spec: goodSpec(), backend, rank: 8 } as never)],
    ['new FullKVCache with backend "nope"', () => new FullKVCache({ spec: goodSpec(), backend: 'nope' })],
    ['estimateMemory(null)', () => estimateMemory(null as never)], ['estimateMemory(undefined)', () => estimateMemory(undefined as never)], ['estimateMemory(5)', () => estimateMemory(5 as never)],
    ['estimateMemory without tokens', () => estimateMemory({ spec: goodSpec() } as never)], ['estimateMemory with tokens -1', () => estimateMemory({ spec: goodSpec(), tokens: -1 })],
    ['estimateMemory with tokens NaN', () => estimateMemory({ spec: goodSpec(), tokens: NaN })], ['estimateMemory with tokens 1.5', () => estimateMemory({ spec: goodSpec(), tokens: 1.5 })],
    ['estimateMemory with tokens "x"', () => estimateMemory({ spec: goodSpec(), tokens: 'x' as never })], ['estimateMemory with tokens Infinity', () => estimateMemory({ spec: goodSpec(), tokens: Infinity })],
    ['estimateMemory with tokens past maxTokens', () => estimateMemory({ spec: goodSpec(), tokens: 1000, maxTokens: 100 })],
    ['estimateMemory with policy "nope"', () => estimateMemory({ spec: goodSpec(), tokens: 100, policy: 'nope' as never })],
    ['estimateMemory with an unknown key', () => estimateMemory({ spec: goodSpec(), tokens: 100, polcy: 'full' } as never)],
    ['estimateMemory with options 5', () => estimateMemory({ spec: goodSpec(), tokens: 100, options: 5 as never })],
  ];
  return [...cases, ...whole];
}

function loadCacheCases(env: TestEnv, bytes: Uint8Array): [string, () => unknown][] {
  const backend = env.backend;
  return [
    ['loadCache(its ArrayBuffer)', () => loadCache(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as never, { backend })],
    ['loadCache(a string)', () => loadCache('snapshot' as never, { backend })], ['loadCache(null)', () => loadCache(null as never, { backend })],
    ['loadCache(undefined)', () => loadCache(undefined as never, { backend })], ['loadCache(5)', () => loadCache(5 as never, { backend })],
    ['loadCache(a plain Array of its bytes)', () => loadCache(Array.from(bytes) as never, { backend })],
    ['loadCache(a DataView)', () => loadCache(new DataView(bytes.buffer.slice(0)) as never, { backend })],
    ['loadCache(a Uint16Array)', () => loadCache(new Uint16Array(8) as never, { backend })], ['loadCache({})', () => loadCache({} as never, { backend })],
    ['loadCache(bytes, null)', () => loadCache(bytes, null as never)], ['loadCache(bytes, { backend: "nope" })', () => loadCache(bytes, { backend: 'nope' })],
    ['loadCache(bytes, { backend: 5 })', () => loadCache(bytes, { backend: 5 as never })], ['loadCache(bytes, { backend: a Symbol })', () => loadCache(bytes, { backend: sym() as never })],
  ];
}

forEachEnv('generated bad inputs', (env) => {
  const fx: Record<'shadowkv' | 'full', Fixture> = {} as never;
  beforeAll(async () => {
    fx.shadowkv = await fixture(env, 'shadowkv');
    fx.full = await fixture(env, 'full');
  });
  afterAll(() => {
    fx.shadowkv.cache.dispose();
    fx.full.cache.dispose();
  });
  const policy = fc.constantFrom('shadowkv', 'full') as fc.Arbitrary<'shadowkv' | 'full'>;

  const POLICIES = ['shadowkv', 'full'] as const;
  const ROLES = [...PREFILL_ROLES, ...DECODE_ROLES];

  const badTensor = async (p: 'shadowkv' | 'full', ri: number, ci: number, r: number) => {
    const role = ROLES[ri]!;
    const [name, make] = BAD_TENSORS[ci]!;
    // NOTE: queries are optional, so absent ones are no bad input.
    if (role === 'queries' && (name === 'tensor undefined' || name === 'tensor null')) return;
    const inputs: Record<string, unknown> = goodInputs(role, rng(r));
    inputs[role] = make(inputs[role] as Tensor, r);
    await expectRejected(fx[p], `${role}: ${name}`, callWith(role, inputs));
  };
  it('bad tensors to prefill and decode (shape, dtype, data type, length, non-finite, not a tensor)', async () => {
    if (SURVEY) return survey([2, ROLES.length, BAD_TENSORS.length, 3], (p, ri, ci, r) => badTensor(POLICIES[p]!, ri!, ci!, [0, 5, 977][r!]!));
    await fc.assert(fc.asyncProperty(policy, fc.nat(ROLES.length - 1), fc.nat(BAD_TENSORS.length - 1), fc.nat(1000), badTensor), { seed: SEED, numRuns: 150 });
  });

  const badBits = async (p: 'shadowkv' | 'full', ri: number, bi: number, r: number) => {
    const role = ROLES[ri]!;
    const [dtype, bits] = NON_FINITE_BITS[bi]!;
    const inputs = goodInputs(role, rng(r), dtype);
    (inputs[role]!.data as Uint16Array)[r % inputs[role]!.data.length] = bits;
    await expectRejected(fx[p], `${role}: ${dtype} bits 0x${bits.toString(16)}`, callWith(role, inputs));
  };
  it('16-bit inputs holding Inf/NaN bit patterns', async () => {
    if (SURVEY) return survey([2, ROLES.length, NON_FINITE_BITS.length, 3], (p, ri, bi, r) => badBits(POLICIES[p]!, ri!, bi!, [0, 5, 977][r!]!));
    await fc.assert(fc.asyncProperty(policy, fc.nat(ROLES.length - 1), fc.nat(NON_FINITE_BITS.length - 1), fc.nat(1000), badBits), { seed: SEED, numRuns: 30 });
  });

  it.skipIf(env.dtype === 'f32')('values and keys that do not fit the storage dtype', async () => {
    const failures: string[] = [];
    const check = async (p: 'shadowkv' | 'full', label: string, role: Role, inputs: Record<string, unknown>) => {
      const err = await rejection(() => expectRejected(fx[p], label, callWith(role, inputs)));
      if (err !== NO_ERROR) failures.push((err as Error).message);
    };
    for (const p of POLICIES) {
      for (const role of ['keys', 'values', 'key', 'value'] as Role[]) {
        const inputs = overflowInputs(fx[p], role, rng(SEED));
        expect(inputs, `no overflowing ${role} found`).toBeDefined();
        await check(p, `${role} past the ${env.dtype} range`, role, inputs!);
      }
      // bf16 inputs into f16 storage: 1e5 is a finite bf16, not a finite f16.
      if (env.dtype === 'f16') {
        const inputs = goodInputs('values', rng(SEED), 'bf16');
        (inputs.values!.data as Uint16Array)[3] = 0x47c3; // 99840
        await check(p, 'bf16 values of 99840 into f16 storage', 'values', inputs);
      }
    }
    expect(failures).toEqual([]);
  });

  it.skipIf(env.dtype === 'f32')('values and keys within the storage range are accepted, and decode stays finite', async () => {
    const cache = await createCache({ spec, policy: 'full', batch: 2, dtype: env.dtype, backend: env.backend });
    const rand = rng(SEED + 3);
    const inputs = goodInputs('keys', rand);
    (inputs.values!.data as Float32Array).fill(0.9 * STORAGE_MAX[env.dtype]);
    (inputs.keys!.data as Float32Array).forEach((_, i, a) => (a[i] = (i % 2 ? -1 : 1) * (env.dtype === 'f16' ? 0.5 * STORAGE_MAX.f16 : 1e4)));
    cache.prefill(0, { keys: inputs.keys!, values: inputs.values!, sequences: [1] });
    const out = cache.decode(0, goodInputs('query', rand) as never);
    expect(Array.from(out.data as Float32Array).every(Number.isFinite)).toBe(true);
    cache.dispose();
  });

  const argumentCases: [string, (fx: Fixture) => Case[], number][] = [
    ['bad layers (Symbol, string, NaN, -1, 1.5, out of range, objects) to every call that takes one', () => layerCases(), 60],
    ['bad row indices to length, reset, crop, selection, compress', () => indexCases(), 50],
    ['bad sequences (not an array, repeated, out of range, wrong count)', () => sequenceCases(), 50],
    ['decode options.out of the wrong type or length', () => outCases(), 25],
    ['crop below the compressed prefix, past the end, or not an integer', (f) => cropCases(f), 25],
    ['positions past maxTokens', (f) => capacityCases(f), 6],
    ['compress options (not an object, repeated or out-of-range rows, onProgress not a function)', () => compressCases(), 40],
  ];
  it.each(argumentCases)('%s', async (_, make, runs) => {
    const one = async (p: 'shadowkv' | 'full', k: number) => {
      const cases = make(fx[p]).filter((c) => !c.policies || c.policies.includes(p));
      if (!cases.length) return; // e.g. compress() on the full policy
      const c = cases[k % cases.length]!;
      await expectRejected(fx[p], c.label, c.call);
    };
    if (SURVEY) return survey([2, make(fx.shadowkv).length], async (p, k) => {
      if (k! < make(fx[POLICIES[p]!]).filter((c) => !c.policies || c.policies.includes(POLICIES[p]!)).length) await one(POLICIES[p]!, k!);
    });
    await fc.assert(fc.asyncProperty(policy, fc.nat(), one), { seed: SEED, numRuns: runs });
  });

  it('bad configurations to createCache, new FullKVCache, new ShadowKVCache and estimateMemory', async () => {
    const failures: string[] = [];
    for (const [label, call] of configCases(env)) {
      const err = await rejection(() => expectTypedError(env, label, call));
      if (err !== NO_ERROR) failures.push((err as Error).message);
    }
    expect(failures).toEqual([]);
  });

  it('bad inputs to loadCache', async () => {
    const failures: string[] = [];
    for (const [label, call] of loadCacheCases(env, fx.full.cache.save())) {
      const err = await rejection(() => expectTypedError(env, label, call));
      if (err !== NO_ERROR) failures.push((err as Error).message);
    }
    expect(failures).toEqual([]);
  });

  it.each(['shadowkv', 'full'] as const)('%s: every call after dispose() is a DisposedError', async (p) => {
    const cache = await loadCache(fx[p].cache.save(), { backend: env.backend });
    cache.dispose();
    cache.dispose(); // idempotent
    const rand = rng(SEED);
    const calls: [string, () => unknown][] = [
      ['prefill', () => cache.prefill(0, { keys: tensor([1, Hkv, 3, d], rand), values: tensor([1, Hkv, 3, d], rand) })],
      ['decode', () => cache.decode(0, goodInputs('query', rand) as never)],
      ['decode with bad input', () => cache.decode(0, null as never)],
      ['crop', () => cache.crop(1, 1)], ['reset()', () => cache.reset()], ['reset(0)', () => cache.reset(0)],
      ['length()', () => cache.length()], ['length(0, 1)', () => cache.length(0, 1)],
      ['stats', () => cache.stats()], ['memory', () => cache.memory()], ['save', () => cache.save()],
      ...(p === 'shadowkv'
        ? ([
            ['selection', () => (cache as ShadowKVCache).selection(0, 0, 0)], ['compress', () => (cache as ShadowKVCache).compress()],
            ['compressAsync', () => (cache as ShadowKVCache).compressAsync()],
          ] as [string, () => unknown][])
        : []),
    ];
    for (const [name, call] of calls) {
      counts.afterDispose += 1;
      const err = await outcome(call);
      expect((err as { code?: string })?.code, `${name} after dispose(): ${showError(err)}`).toBe('SKV_DISPOSED');
    }
  });
}, (e) => e.name.startsWith('wasm'));

describe('counts', () => {
  afterAll(() => console.log(`badInput.fuzz counts: ${JSON.stringify(counts)}`));
  it('ran at least 1000 generated bad inputs', () => {
    expect(counts.badInputs).toBeGreaterThanOrEqual(1000);
  });
});
