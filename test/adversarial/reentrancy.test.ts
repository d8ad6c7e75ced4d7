// Inputs that run code while the cache reads them: a getter that calls back into the same cache
// (the inner call is a ReentrancyError, SKV_REENTRANT), and getters that answer differently on each
// read (what is validated is what is stored: the result equals the call with the first-read values).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCache, loadCache, type Cache, type Tensor } from '../../packages/shadowkv/src/backend.js';
import { announceSeed, decodeInput, isTyped, NO_ERROR, sameBytes, showError, thrown } from '../helpers/adversarial.js';
import { makeTensor, randn, rng } from '../helpers/data.js';
import { forEachEnv } from '../envs.js';

const SEED = announceSeed('test/adversarial/reentrancy.test.ts');
const counts = { reentrant: 0, changingInputs: 0 };

const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 };
const { queryHeads: Hq, kvHeads: Hkv, headDim: d } = spec;
const S = 5;

const tensor = (shape: number[], rand: () => number): Tensor => makeTensor(randn(shape.reduce((a, b) => a * b, 1), rand), shape, 'f32').t;
const nanOf = (t: Tensor): Tensor => ({ ...t, data: t.data.slice().fill(NaN) });

/** Plain arguments of the outer call: a prefill of row 1 (S tokens, with queries) or a decode of both rows. */
type Plain = Record<string, unknown>;
const plainPrefill = (rand: () => number): Plain => ({ keys: tensor([1, Hkv, S, d], rand), values: tensor([1, Hkv, S, d], rand), queries: tensor([1, Hq, S, d], rand), sequences: [1] });
const plainDecode = (rand: () => number): Plain => ({ ...decodeInput(spec, 2, rand), sequences: [0, 1], out: new Float32Array(2 * Hq * d) });

type Kind = 'prefill' | 'decode';
type Built = { layer: unknown; input: Record<string, unknown>; options?: Record<string, unknown> };

/** The outer call's arguments from plain values, with `site` read through `read` (a getter). */
function build(kind: Kind, plain: Plain, site?: string, read?: (plainValue: unknown) => unknown): Built {
  // Tensors and arrays are copied one level (data arrays are shared), so a getter never lands on `plain`.
  const copy = (t: unknown) => (Array.isArray(t) ? [...t] : t && typeof t === 'object' && !ArrayBuffer.isView(t) ? { ...(t as object) } : t);
  const input: Record<string, unknown> = {};
  const opts: Record<string, unknown> = {};
  const inputKeys = kind === 'prefill' ? ['keys', 'values', 'queries', 'sequences'] : ['query', 'key', 'value'];
  for (const k of inputKeys) input[k] = copy(plain[k]);
  if (kind === 'decode') for (const k of ['sequences', 'out']) opts[k] = copy(plain[k]);
  let layer: unknown = kind === 'prefill' ? 0 : 1;
  if (site && read) {
    const define = (obj: object, key: PropertyKey, value: unknown) =>
      Object.defineProperty(obj, key, { get: () => read(value), enumerable: true, configurable: true });
    const [head, tail] = site.split('.') as [string, string | undefined];
    if (head === 'layer') {
      const value = layer;
      layer = { toString: () => String(read(value)), valueOf: () => read(value) };
    } else if (head === 'options') define(opts, tail!, opts[tail!]);
    else if (head === 'input') define(input, tail!, input[tail!]);
    else if (tail === '0' || tail === '1') {
      const arr = (kind === 'prefill' ? input : opts)[head] as unknown[];
      define(arr, Number(tail), arr[Number(tail)]);
    } else define(input[head] as object, tail!, (input[head] as Record<string, unknown>)[tail!]);
  }
  return { layer, input, options: kind === 'decode' ? opts : undefined };
}

function run(cache: Cache, kind: Kind, b: Built): { err: unknown; out?: Uint8Array } {
  let out: Tensor | undefined;
  const err = thrown(() => {
    out = kind === 'prefill' ? cache.prefill(b.layer as never, b.input as never) : cache.decode(b.layer as never, b.input as never, b.options as never);
  });
  return { err, out: out ? new Uint8Array(out.data.buffer, out.data.byteOffset, out.data.byteLength).slice() : undefined };
}

const PREFILL_SITES = ['input.keys', 'input.values', 'input.queries', 'input.sequences', 'keys.data', 'keys.shape', 'keys.dtype', 'sequences.0', 'layer'];
const DECODE_SITES = ['input.query', 'input.key', 'input.value', 'options.sequences', 'options.out', 'query.data', 'key.shape', 'value.dtype', 'sequences.1', 'layer'];

/** Calls made from inside a getter; the first three must be a ReentrancyError. */
const INNER: Record<string, (c: Cache) => unknown> = {
  decode: (c) => c.decode(0, decodeInput(spec, 2, rng(1))),
  prefill: (c) => c.prefill(0, { keys: tensor([1, Hkv, 3, d], rng(2)), values: tensor([1, Hkv, 3, d], rng(3)), sequences: [1] }),
  dispose: (c) => c.dispose(),
  reset: (c) => c.reset(1),
  crop: (c) => c.crop(1, 3),
};
const MUST_BE_REENTRANT = new Set(['decode', 'prefill', 'dispose']);

/**
 * How the outer call must end against the same call with plain first-read arguments on a twin: the
 * same success (output and saved state byte-identical), or, where `mayReject` (or the plain call is
 * rejected too), a typed error that left the cache as it was.
 */
function compareOutcome(
  cache: Cache, before: Uint8Array, got: { err: unknown; out?: Uint8Array }, twin: Cache, want: { err: unknown; out?: Uint8Array } | undefined, p: string[], mayReject: boolean,
): void {
  if (got.err !== NO_ERROR) {
    if (!isTyped(got.err)) p.push(`the outer call threw ${showError(got.err)}`);
    else if (!mayReject && want && want.err === NO_ERROR) p.push(`the outer call threw ${showError(got.err)}, but the same call with the first-read values goes through`);
    const after = thrown(() => {
      if (!sameBytes(cache.save(), before)) p.push(`the outer call threw ${showError(got.err)} but the cache changed`);
    });
    if (after !== NO_ERROR) p.push(`save() after the outer call threw ${showError(after)}`);
    return;
  }
  if (!want) return void p.push('the outer call went through; it must be rejected');
  if (want.err !== NO_ERROR) return void p.push(`the outer call went through, but the same call with the first-read values throws ${showError(want.err)}`);
  if (got.out && want.out && !sameBytes(got.out, want.out)) p.push('its output differs from the same call with the first-read values');
  const state = thrown(() => {
    if (!sameBytes(cache.save(), twin.save())) p.push('the stored state differs from the same call with the first-read values');
  });
  if (state !== NO_ERROR) p.push(`save() after the outer call threw ${showError(state)}`);
}

forEachEnv('re-entrant calls and changing inputs', (env) => {
  let bytes: Uint8Array;
  beforeAll(async () => {
    // Row 0 compressed and decoded, row 1 dense with room (as in the bad-input fixture, smaller).
    const rand = rng(SEED);
    const cache = await createCache({ spec, policy: 'shadowkv', batch: 2, dtype: env.dtype, backend: env.backend, maxTokens: 200, options });
    for (let l = 0; l < 2; l++) cache.prefill(l, { keys: tensor([1, Hkv, 80, d], rand), values: tensor([1, Hkv, 80, d], rand), sequences: [0] });
    for (let l = 0; l < 2; l++) cache.prefill(l, { keys: tensor([1, Hkv, 20, d], rand), values: tensor([1, Hkv, 20, d], rand), sequences: [1] });
    for (let t = 0; t < 3; t++) for (let l = 0; l < 2; l++) cache.decode(l, decodeInput(spec, 2, rand));
    bytes = cache.save();
    cache.dispose();
  });
  const fresh = () => loadCache(bytes, { backend: env.backend });

  const reentrant = (kind: Kind) => (kind === 'prefill' ? PREFILL_SITES : DECODE_SITES).flatMap((site) => Object.keys(INNER).flatMap((inner) => [true, false].map((swallow) => [kind, site, inner, swallow] as const)));
  it.each([...reentrant('prefill'), ...reentrant('decode')])('%s, %s read by a getter that calls %s (inner error swallowed: %s)', async (kind, site, inner, swallow) => {
    counts.reentrant += 1;
    const [cache, twin] = [await fresh(), await fresh()];
    const before = cache.save();
    const plain = (kind === 'prefill' ? plainPrefill : plainDecode)(rng(SEED + 1));
    let innerErr: unknown = 'never called';
    const built = build(kind, plain, site, (value) => {
      if (innerErr === 'never called') {
        innerErr = thrown(() => INNER[inner]!(cache));
        if (!swallow && innerErr !== NO_ERROR) throw innerErr;
      }
      return value;
    });
    const got = run(cache, kind, built);
    const p: string[] = [];
    // NOTE: a layer object need not be read at all (the call is rejected for its type).
    if (innerErr === 'never called') {
      if (site !== 'layer') p.push(`the cache never read ${site}`);
    }
    else if (MUST_BE_REENTRANT.has(inner) && (innerErr as { code?: string })?.code !== 'SKV_REENTRANT') p.push(`the inner ${inner} gave ${showError(innerErr)}, expected a ReentrancyError (SKV_REENTRANT)`);
    // The twin runs the same call with plain arguments (none for a layer object: that call is rejected).
    const twinPlain = (kind === 'prefill' ? plainPrefill : plainDecode)(rng(SEED + 1));
    const want = site === 'layer' ? undefined : run(twin, kind, build(kind, twinPlain));
    compareOutcome(cache, before, got, twin, want, p, true);
    thrown(() => cache.dispose());
    twin.dispose();
    expect(p, `[${env.name}] ${kind}: ${site} getter calls ${inner}`).toEqual([]);
  });

  /** [kind, site, label, the value every later read returns]. */
  const changing: [Kind, string, string, (plain: Plain, rand: () => number) => unknown][] = [
    ['prefill', 'input.keys', 'other keys', (_, r) => tensor([1, Hkv, S, d], r)],
    ['prefill', 'input.keys', 'NaN keys', (p) => nanOf(p.keys as Tensor)],
    ['prefill', 'input.keys', 'keys of 7 tokens', (_, r) => tensor([1, Hkv, 7, d], r)],
    ['prefill', 'input.keys', 'null', () => null],
    ['prefill', 'input.values', 'other values', (_, r) => tensor([1, Hkv, S, d], r)],
    ['prefill', 'input.values', 'NaN values', (p) => nanOf(p.values as Tensor)],
    ['prefill', 'input.queries', 'other queries', (_, r) => tensor([1, Hq, S, d], r)],
    ['prefill', 'input.queries', 'queries of another shape', (_, r) => tensor([1, Hq, S + 1, d], r)],
    ['prefill', 'keys.data', 'other data', (_, r) => randn(Hkv * S * d, r, 1, new Float32Array(Hkv * S * d))],
    ['prefill', 'keys.data', 'NaN data', () => new Float32Array(Hkv * S * d).fill(NaN)],
    ['prefill', 'keys.data', 'shorter data', () => new Float32Array(Hkv * (S - 1) * d)],
    ['prefill', 'keys.shape', `[1, ${Hkv}, ${S + 3}, ${d}]`, () => [1, Hkv, S + 3, d]],
    ['prefill', 'keys.shape', `[1, ${Hkv}, ${S - 1}, ${d}]`, () => [1, Hkv, S - 1, d]],
    ['prefill', 'keys.shape', '{}', () => ({})],
    ['prefill', 'keys.dtype', "'bf16'", () => 'bf16'],
    ['prefill', 'keys.dtype', "'f16'", () => 'f16'],
    ['prefill', 'keys.dtype', "'f64'", () => 'f64'],
    ['prefill', 'input.sequences', '[0]', () => [0]],
    ['prefill', 'input.sequences', '[5]', () => [5]],
    ['prefill', 'sequences.0', '0', () => 0],
    ['decode', 'input.query', 'another query', (_, r) => tensor([2, Hq, 1, d], r)],
    ['decode', 'input.key', 'NaN key', (p) => nanOf(p.key as Tensor)],
    ['decode', 'input.value', 'another value', (_, r) => tensor([2, Hkv, 1, d], r)],
    ['decode', 'options.sequences', '[1, 0]', () => [1, 0]],
    ['decode', 'options.sequences', '[0]', () => [0]],
    ['decode', 'options.out', 'a shorter Float32Array', () => new Float32Array(Hq * d)],
    ['decode', 'options.out', 'a Uint16Array', () => new Uint16Array(2 * Hq * d)],
    ['decode', 'options.out', 'null', () => null],
    ['decode', 'query.data', 'NaN data', () => new Float32Array(2 * Hq * d).fill(NaN)],
    ['decode', 'key.data', 'other data', (_, r) => randn(2 * Hkv * d, r, 1, new Float32Array(2 * Hkv * d))],
    ['decode', 'key.shape', `[1, ${Hkv}, 1, ${d}]`, () => [1, Hkv, 1, d]],
    ['decode', 'value.dtype', "'bf16'", () => 'bf16'],
    ['decode', 'sequences.1', '0', () => 0],
  ];
  it.each(changing)('%s: %s reads as the plain value first, then %s', async (kind, site, _, later) => {
    counts.changingInputs += 1;
    const [cache, twin] = [await fresh(), await fresh()];
    const before = cache.save();
    const plain = (kind === 'prefill' ? plainPrefill : plainDecode)(rng(SEED + 2));
    const rand = rng(SEED + 3);
    let reads = 0;
    const built = build(kind, plain, site, (value) => (reads++ === 0 ? value : later(plain, rand)));
    const got = run(cache, kind, built);
    const want = run(twin, kind, build(kind, (kind === 'prefill' ? plainPrefill : plainDecode)(rng(SEED + 2))));
    const p: string[] = [];
    compareOutcome(cache, before, got, twin, want, p, false);
    cache.dispose();
    twin.dispose();
    expect(p, `[${env.name}] ${kind}: ${site} changes after the first read (read ${reads} times)`).toEqual([]);
  });

  /** A later getter writes into an array the cache read earlier: the result is a call with the data before or after, never a mix that skipped validation. */
  const poisoning: [Kind, string, string, (plain: Plain) => void, boolean][] = [
    ['prefill', 'input.values', 'sets keys.data[3] to NaN', (p) => ((p.keys as Tensor).data[3] = NaN), false],
    ['prefill', 'input.queries', 'fills values.data with NaN', (p) => (p.values as Tensor).data.fill(NaN), false],
    ['prefill', 'input.sequences', 'fills keys.data with NaN', (p) => (p.keys as Tensor).data.fill(NaN), false],
    ['prefill', 'input.values', 'sets keys.data[3] to 5', (p) => ((p.keys as Tensor).data[3] = 5), true],
    ['decode', 'input.value', 'sets key.data[0] to NaN', (p) => ((p.key as Tensor).data[0] = NaN), false],
    ['decode', 'options.out', 'fills query.data with Infinity', (p) => (p.query as Tensor).data.fill(Infinity), false],
    ['decode', 'input.value', 'sets key.data[0] to 5', (p) => ((p.key as Tensor).data[0] = 5), true],
    ['decode', 'options.sequences', 'fills value.data with NaN', (p) => (p.value as Tensor).data.fill(NaN), false],
    ['decode', 'sequences.1', 'fills key.data with NaN', (p) => (p.key as Tensor).data.fill(NaN), false],
    ['prefill', 'sequences.0', 'fills keys.data with NaN', (p) => (p.keys as Tensor).data.fill(NaN), false],
    ['prefill', 'keys.dtype', 'fills values.data with NaN', (p) => (p.values as Tensor).data.fill(NaN), false],
  ];
  it.each(poisoning)('%s: the getter of %s %s', async (kind, site, _, poison, validAfter) => {
    counts.changingInputs += 1;
    const [cache, twinBefore, twinAfter] = [await fresh(), await fresh(), await fresh()];
    const before = cache.save();
    const make = () => (kind === 'prefill' ? plainPrefill : plainDecode)(rng(SEED + 4));
    const plain = make();
    const built = build(kind, plain, site, (value) => {
      poison(plain);
      return value;
    });
    const got = run(cache, kind, built);
    const pre = run(twinBefore, kind, build(kind, make()));
    const postPlain = make();
    poison(postPlain);
    const post = run(twinAfter, kind, build(kind, postPlain));
    const p: string[] = [];
    if (got.err === NO_ERROR) {
      const asBefore: string[] = [];
      compareOutcome(cache, before, got, twinBefore, pre, asBefore, true);
      const asAfter: string[] = [];
      if (validAfter) compareOutcome(cache, before, got, twinAfter, post, asAfter, true);
      if (asBefore.length && (!validAfter || asAfter.length)) p.push(`the call went through, but its state is neither the call with the data before the write${validAfter ? ' nor after it' : ''}: ${asBefore.join('; ')}`);
    } else compareOutcome(cache, before, got, twinBefore, pre, p, true);
    [cache, twinBefore, twinAfter].forEach((c) => c.dispose());
    expect(p, `[${env.name}] ${kind}: the ${site} getter ${_}`).toEqual([]);
  });
}, (e) => e.name.startsWith('wasm'));

describe('counts', () => {
  afterAll(() => console.log(`reentrancy counts: ${JSON.stringify(counts)}`));
  it('ran every re-entrant and changing-input case', () => {
    expect(counts.reentrant).toBeGreaterThanOrEqual(100);
    expect(counts.changingInputs).toBeGreaterThanOrEqual(40);
  });
});
