// Snapshots under attack: every byte-level mutation is a SnapshotError (the CRC), and every content
// edit with a recomputed CRC either is a SnapshotError or restores a consistent cache, fast and
// without a heap out of proportion to the snapshot.
import { appendFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCache, loadCache, type Cache } from '../../packages/shadowkv/src/backend.js';
import { announceSeed, cacheProblems, describeValue, NO_ERROR, openSnapshot, rejection, sameBytes, sealSnapshot, showError } from '../helpers/adversarial.js';
import { randn, rng } from '../helpers/data.js';
import { forEachEnv, type TestEnv } from '../envs.js';

const SEED = announceSeed('test/adversarial/snapshot.fuzz.test.ts');
const BYTE_RUNS = 340; // per env: 3 wasm envs, so >= 1000 per run
const EDIT_RUNS = 12; // per category and env: 7 categories x 3 envs, plus the targeted list x 2 policies, so >= 300
const CASE_MS = 2000;
const HEAP_SLACK = 64 * 2 ** 20;

const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, sinkTokens: 4, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48, hostPageChunks: 4 };
const counts = { byteMutations: 0, edits: 0, editsRejected: 0, editsLoaded: 0 };
// SKV_TRACE=<file>: each case is appended to the file before it runs (to find one that hangs).
const trace = (line: string) => process.env.SKV_TRACE && appendFileSync(process.env.SKV_TRACE, `${new Date().toISOString()} ${line}\n`);

/** A shadowkv cache with a compressed, compacted and decoded row 0 and a dense row 1, or the full policy's. */
async function base(env: TestEnv, policy: 'shadowkv' | 'full'): Promise<Uint8Array> {
  const rand = rng(SEED + 1);
  const t = (shape: number[]) => ({ data: randn(shape.reduce((a, b) => a * b, 1), rand, 1, new Float32Array(shape.reduce((a, b) => a * b, 1))), shape, dtype: 'f32' as const });
  const cache: Cache = policy === 'shadowkv'
    ? await createCache({ spec, policy, batch: 2, dtype: env.dtype, backend: env.backend, maxTokens: 200, options })
    : await createCache({ spec, policy, batch: 2, dtype: env.dtype, backend: env.backend, maxTokens: 200 });
  for (let l = 0; l < spec.layers; l++) {
    cache.prefill(l, { keys: t([1, 2, 90, 16]), values: t([1, 2, 90, 16]), sequences: [0] });
    cache.prefill(l, { keys: t([1, 2, 21, 16]), values: t([1, 2, 21, 16]), sequences: [1] });
  }
  for (let step = 0; step < 22; step++) {
    for (let l = 0; l < spec.layers; l++) cache.decode(l, { query: t([1, 4, 1, 16]), key: t([1, 2, 1, 16]), value: t([1, 2, 1, 16]) }, { sequences: [0] });
  }
  for (let l = 0; l < spec.layers; l++) cache.decode(l, { query: t([2, 4, 1, 16]), key: t([2, 2, 1, 16]), value: t([2, 2, 1, 16]) });
  // NOTE: save() may hand back a Buffer, whose slice() is a view; the base is a plain copy.
  const bytes = new Uint8Array(cache.save());
  cache.dispose();
  return bytes;
}

// ---- byte mutations ----

type ByteMutation = { kind: 'flip' | 'set' | 'insert' | 'delete' | 'truncate' | 'duplicate'; pos: number; value: number; bit: number; count: number };
const byteMutation = fc.record({
  kind: fc.constantFrom('flip', 'set', 'insert', 'delete', 'truncate', 'duplicate') as fc.Arbitrary<ByteMutation['kind']>,
  pos: fc.nat(),
  value: fc.integer({ min: 0, max: 255 }),
  bit: fc.integer({ min: 0, max: 7 }),
  count: fc.integer({ min: 1, max: 24 }),
});

function mutateBytes(b: Uint8Array, m: ByteMutation): Uint8Array {
  const i = m.pos % b.length;
  const copy = (from: number, to: number) => new Uint8Array(b.subarray(from, to));
  const splice = (at: number, remove: number, insert: Uint8Array) => {
    const out = new Uint8Array(b.length - Math.min(remove, b.length - at) + insert.length);
    out.set(b.subarray(0, at));
    out.set(insert, at);
    out.set(b.subarray(Math.min(at + remove, b.length)), at + insert.length);
    return out;
  };
  if (m.kind === 'flip' || m.kind === 'set') {
    const out = copy(0, b.length);
    out[i] = m.kind === 'flip' ? b[i]! ^ (1 << m.bit) : m.value === b[i] ? (m.value + 1) & 255 : m.value;
    return out;
  }
  if (m.kind === 'insert') return splice(i, 0, Uint8Array.from({ length: m.count }, (_, k) => (m.value + k) & 255));
  if (m.kind === 'delete') return splice(i, m.count, new Uint8Array(0));
  if (m.kind === 'truncate') return copy(0, Math.min(i, b.length - 1));
  return splice(i, 0, copy(i, i + m.count));
}

// ---- content edits (the CRC recomputed) ----

type Path = (string | number)[];
type Leaf = { path: Path; value: unknown };

/** Every node of the content, depth first, with its path. */
function nodes(x: unknown, path: Path = [], out: Leaf[] = []): Leaf[] {
  out.push({ path, value: x });
  if (ArrayBuffer.isView(x) || x === null || typeof x !== 'object') return out;
  if (Array.isArray(x)) x.forEach((v, i) => nodes(v, [...path, i], out));
  else for (const [k, v] of Object.entries(x)) nodes(v, [...path, k], out);
  return out;
}

function setAt(root: Record<string, unknown>, path: Path, value: unknown): void {
  let o = root as Record<string | number, unknown>;
  for (const k of path.slice(0, -1)) o = o[k] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  if (value === DROP) {
    if (Array.isArray(o)) o.splice(last as number, 1);
    else delete o[last];
  } else o[last] = value;
}
const DROP = Symbol('drop');

type Edit = { describe: string; value: unknown };
type Category = { name: string; applies: (leaf: Leaf) => boolean; edits: (leaf: Leaf, k: number) => Edit };
const SIZE_PATHS = new Set(['spec.layers', 'spec.queryHeads', 'spec.kvHeads', 'spec.headDim', 'cache.batch']);
const isSizePath = (p: Path) => SIZE_PATHS.has(p.join('.')) || ['tokens', 'rank'].includes(String(p[p.length - 1])) && p.includes('store');
const isTyped = (v: unknown): v is Float32Array | Uint16Array | Int32Array | Float64Array => ArrayBuffer.isView(v) && !(v instanceof DataView);
const idsName = (p: Path) => ['outlierIds', 'landmarkIds', 'selected'].includes(String(p[p.length - 1]));

const CATEGORIES: Category[] = [
  {
    name: 'a number changed (length, count, tokens, rank, spec, cache or policy option, counter)',
    applies: (l) => typeof l.value === 'number',
    edits: ({ value, path }, k) => {
      const v = value as number;
      const huge: [string, unknown][] = [['2^31', 2 ** 31], ['2^32 + v', 2 ** 32 + v], ['1e6', 1e6], ['1e9', 1e9]];
      const all: [string, unknown][] = [
        ['0', 0], ['-1', -1], ['1', 1], ['+1', v + 1], ['-1', v - 1], ['x2', v * 2], ['+0.5', v + 0.5], ['negated', -v || -1], ['NaN', NaN],
        ['Infinity', Infinity], ['1e300', 1e300], ['as a string', String(v)], ['null', null], ['true', true],
        // NOTE: huge model sizes run for minutes today; limits.test.ts has them, in a child process.
        ...(isSizePath(path) ? [] : huge),
      ];
      const [d, nv] = all[k % all.length]!;
      return { describe: `${v} → ${d}`, value: nv };
    },
  },
  {
    name: 'a string changed (policy, dtype, rope style)',
    applies: (l) => typeof l.value === 'string',
    edits: ({ value }, k) => {
      const all = ['full', 'shadowkv', 'f32', 'f16', 'bf16', 'half', 'interleaved', '', 'quest', 5, null].filter((x) => x !== value);
      const nv = all[k % all.length];
      return { describe: `${JSON.stringify(value)} → ${JSON.stringify(nv)}`, value: nv };
    },
  },
  {
    name: 'a typed array swapped for another type',
    applies: (l) => isTyped(l.value),
    edits: ({ value }, k) => {
      const x = value as Float32Array;
      const all: [string, () => unknown][] = [
        ['Float64Array', () => Float64Array.from(x)],
        ['Float32Array', () => Float32Array.from(x)],
        ['Uint16Array', () => Uint16Array.from(x)],
        ['Int32Array', () => Int32Array.from(x)],
        ['Uint8Array', () => Uint8Array.from(x)],
        ['plain Array', () => Array.from(x)],
        ['its bytes as Uint8Array', () => new Uint8Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength))],
        ['its bytes as Float32Array', () => new Float32Array(x.buffer.slice(x.byteOffset, x.byteOffset + (x.byteLength & ~3)))],
      ];
      const options = all.filter(([name]) => name !== x.constructor.name);
      const [d, make] = options[k % options.length]!;
      return { describe: `${describeValue(x)} → ${d}`, value: make() };
    },
  },
  {
    name: 'an array truncated or extended',
    applies: (l) => isTyped(l.value) || Array.isArray(l.value),
    edits: ({ value }, k) => {
      const x = value as ArrayLike<unknown> & { slice(a: number, b?: number): unknown };
      const n = x.length;
      const grow = (extra: number) => {
        if (Array.isArray(x)) return [...x, ...Array.from({ length: extra }, () => x[n - 1] ?? 0)];
        const Ctor = (x as unknown as { constructor: new (n: number) => { set(a: ArrayLike<unknown>): void } }).constructor;
        const out = new Ctor(n + extra);
        out.set(x as never);
        return out;
      };
      const all: [string, () => unknown][] = [
        ['minus 1', () => x.slice(0, Math.max(n - 1, 0))], ['halved', () => x.slice(0, n >> 1)], ['emptied', () => x.slice(0, 0)],
        ['plus 1', () => grow(1)], ['plus 16', () => grow(16)], ['doubled', () => grow(n || 1)],
      ];
      const [d, make] = all[k % all.length]!;
      return { describe: `${describeValue(x)} ${d}`, value: make() };
    },
  },
  {
    name: 'chunk ids made non-ascending, repeated or out of range',
    applies: (l) => l.value instanceof Int32Array && idsName(l.path),
    edits: ({ value }, k) => {
      const x = value as Int32Array;
      const n = x.length;
      const max = Math.max(...Array.from(x), 0);
      const edit = (f: (y: Int32Array) => void) => () => {
        const y = Int32Array.from(x.length ? x : [0]);
        f(y);
        return y;
      };
      const all: [string, () => Int32Array][] = [
        ['reversed', edit((y) => y.reverse())],
        ['first two swapped', edit((y) => y.length > 1 && ([y[0], y[1]] = [y[1]!, y[0]!]))],
        ['one repeated', edit((y) => (y[y.length - 1] = y[0]!))],
        ['one set to -1', edit((y) => (y[(k * 7) % y.length] = -1))],
        ['last set past the chunks', edit((y) => (y[y.length - 1] = max + 1000))],
        ['last set to 2^31 - 1', edit((y) => (y[y.length - 1] = 2 ** 31 - 1))],
        ['one shifted by one', edit((y) => (y[(k * 3) % y.length] += 1))],
      ];
      const [d, make] = all[k % all.length]!;
      return { describe: `ids[${n}] ${d}`, value: make() };
    },
  },
  {
    name: 'a field dropped or replaced by another kind of value',
    applies: (l) => l.path.length > 0 && !isTyped(l.value) && l.value !== null && typeof l.value === 'object',
    edits: (_, k) => {
      const all: [string, unknown][] = [['dropped', DROP], ['null', null], ['[]', []], ['{}', {}], ['5', 5]];
      const [d, v] = all[k % all.length]!;
      return { describe: d, value: v };
    },
  },
  {
    name: 'a stored value made non-finite or huge',
    applies: (l) => (l.value instanceof Float32Array || l.value instanceof Uint16Array || l.value instanceof Float64Array) && l.value.length > 0,
    edits: ({ value }, k) => {
      const x = (value as Float32Array | Uint16Array | Float64Array).slice();
      const i = (k * 7919) % x.length;
      const bits16 = [0x7fc0, 0x7c00, 0xff80, 0x7f80, 0xfc00, 0x7e00];
      const f32 = [NaN, Infinity, -Infinity, 3e38, -1e30];
      if (x instanceof Uint16Array) x[i] = bits16[k % bits16.length]!;
      else x[i] = f32[k % f32.length]!;
      return { describe: `element ${i} of ${describeValue(x)} → ${x[i]}`, value: x };
    },
  },
];

/**
 * Edits picked by hand: each is a way the loader has been, or could be, fooled. Huge sizes
 * (spec.layers 1e6, batch 2^31, store.tokens 2^24, ...) are in test/adversarial/limits.test.ts:
 * today they run for minutes, so they run there in a child process that can be killed.
 */
const TARGETED: [string, (c: Record<string, any>) => void][] = [
  ['tail keys as Float64Array', (c) => (c.layers[0][1].tail.k = Float64Array.from(c.layers[0][1].tail.k))],
  ['tail keys as Uint16Array in an f32 cache (or Float32Array in a 16-bit one)', (c) => (c.layers[0][1].tail.k = c.cache.dtype === 'f32' ? Uint16Array.from(c.layers[0][1].tail.k) : Float32Array.from(c.layers[0][1].tail.k))],
  ['a row length one more than its tokens', (c) => (c.layers[1][1].length += 1)],
  ['a row length past maxTokens', (c) => (c.layers[0][1].length = c.cache.maxTokens + 5)],
  ['maxTokens below a row length', (c) => (c.cache.maxTokens = 10)],
  ['store tokens one chunk more', (c) => c.layers[0][0].store && (c.layers[0][0].store.tokens += c.options.chunkSize)],
  ['store tokens not a multiple of chunkSize', (c) => c.layers[0][0].store && (c.layers[0][0].store.tokens += 1)],
  ['store u as Float64Array', (c) => c.layers[0][0].store && (c.layers[0][0].store.u = Float64Array.from(c.layers[0][0].store.u))],
  ['landmark ids reversed', (c) => c.layers[0][0].store?.heads[0].landmarkIds.reverse()],
  ['selected ids past the chunks', (c) => c.layers[0][0].store && (c.layers[0][0].store.heads[1].selected = Int32Array.of(1e6))],
  ['landmark ids one longer than landmarks', (c) => c.layers[0][0].store && (c.layers[0][0].store.heads[0].landmarkIds = Int32Array.from([...c.layers[0][0].store.heads[0].landmarkIds, 99]))],
  ['counters.lastLayer 7', (c) => (c.counters.lastLayer = 7)],
  ['counters.lastLayer 0.5', (c) => (c.counters.lastLayer = 0.5)],
  ['counters.compressions "x"', (c) => (c.counters.compressions = 'x')],
  ['layerCounters NaN', (c) => (c.layerCounters[0][0] = NaN)],
  ['options.hostPageChunks 2^30', (c) => (c.options.hostPageChunks = 2 ** 30)],
  ['options.budget 2^40', (c) => c.options.budget !== undefined && (c.options.budget = 2 ** 40)],
  ['options.outlierChunks 2^31', (c) => c.options.outlierChunks !== undefined && (c.options.outlierChunks = 2 ** 31)],
  ['options.chunkSize 8 (stores were made with 4)', (c) => c.options.chunkSize !== undefined && ((c.options.chunkSize = 8), (c.options.budget = 16))],
  ['options.svdPowerIters 2^31', (c) => c.options.svdPowerIters !== undefined && (c.options.svdPowerIters = 2 ** 31)],
  ['cache.dtype changed', (c) => (c.cache.dtype = c.cache.dtype === 'f32' ? 'bf16' : 'f32')],
  ['spec.rope.theta NaN', (c) => (c.spec.rope.theta = NaN)],
  ['an extra row', (c) => c.layers[0].push(c.layers[0][0])],
  ['no layers', (c) => (c.layers = [])],
];

/** One edited snapshot, loaded: a SnapshotError, or a cache that passes `cacheProblems`, within CASE_MS. */
async function checkEdit(env: TestEnv, envelope: Record<string, unknown>, content: Record<string, unknown>, what: string): Promise<void> {
  counts.edits += 1;
  trace(`[${env.name}] ${what}`);
  const start = performance.now();
  const bytes = sealSnapshot(envelope, content);
  let cache: Cache | undefined;
  const err = await rejection(async () => (cache = await loadCache(bytes, { backend: env.backend })));
  let problems: string[] = [];
  if (err === NO_ERROR) {
    counts.editsLoaded += 1;
    try {
      problems = await cacheProblems(cache!, { backend: env.backend, seed: SEED, heapLimit: HEAP_SLACK + 16 * bytes.length, loadedFrom: content });
    } finally {
      cache!.dispose();
    }
  } else {
    counts.editsRejected += 1;
    const code = (err as { code?: string }).code;
    if (code !== 'SKV_SNAPSHOT') problems.push(`loadCache threw ${showError(err)}, expected a SnapshotError`);
  }
  const ms = performance.now() - start;
  if (ms > CASE_MS) problems.push(`took ${ms.toFixed(0)} ms (bound ${CASE_MS} ms)`);
  if (problems.length) throw new Error(`[${env.name}] ${what}: ${err === NO_ERROR ? 'loaded, but ' : ''}${problems.join('; ')}`);
}

forEachEnv('snapshots under attack', (env) => {
  const bases: Record<'shadowkv' | 'full', Uint8Array> = {} as never;
  beforeAll(async () => {
    bases.shadowkv = await base(env, 'shadowkv');
    bases.full = await base(env, 'full');
  });

  it.each(['shadowkv', 'full'] as const)('%s: an untouched snapshot, re-sealed, loads and saves byte-identically', async (policy) => {
    const { envelope, content } = openSnapshot(bases[policy]);
    const cache = await loadCache(sealSnapshot(envelope, content), { backend: env.backend });
    expect(sameBytes(cache.save(), bases[policy])).toBe(true);
    expect(await cacheProblems(cache, { backend: env.backend, seed: SEED, heapLimit: HEAP_SLACK + 16 * bases[policy].length })).toEqual([]);
    cache.dispose();
  });

  it(`every byte-level mutation (${BYTE_RUNS} flips, sets, inserts, deletes, truncations, duplications) is a SnapshotError`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), byteMutation, async (full, m) => {
        counts.byteMutations += 1;
        trace(`[${env.name}] byte mutation ${JSON.stringify(m)}`);
        const bytes = mutateBytes(full ? bases.full : bases.shadowkv, m);
        const start = performance.now();
        let cache: Cache | undefined;
        const err = await rejection(async () => (cache = await loadCache(bytes, { backend: env.backend })));
        cache?.dispose();
        const ms = performance.now() - start;
        if ((err as { code?: string })?.code !== 'SKV_SNAPSHOT') throw new Error(`${m.kind} at ${m.pos % bytes.length}: ${showError(err)}, expected a SnapshotError`);
        if (ms > CASE_MS) throw new Error(`${m.kind} at ${m.pos}: took ${ms.toFixed(0)} ms`);
      }),
      { seed: SEED, numRuns: BYTE_RUNS },
    );
  });

  describe('content edits with a recomputed checksum: a SnapshotError, or a consistent cache', () => {
    it.each(CATEGORIES.map((c) => [c.name, c] as const))('%s', async (_, category) => {
      const picks = Object.fromEntries((['shadowkv', 'full'] as const).map((p) => [p, nodes(openSnapshot(bases[p]).content).filter(category.applies)]));
      await fc.assert(
        fc.asyncProperty(fc.constantFrom('shadowkv', 'full'), fc.nat(), fc.nat(), async (policy, pick, k) => {
          const leaves = picks[policy]!.length ? picks[policy]! : picks.shadowkv!;
          const from = leaves === picks[policy] ? policy : 'shadowkv';
          const leaf = leaves[pick % leaves.length]!;
          const { envelope, content } = openSnapshot(bases[from as 'shadowkv' | 'full']);
          const current = nodes(content).find((n) => n.path.join('.') === leaf.path.join('.'))!;
          const edit = category.edits(current, k);
          setAt(content, leaf.path, edit.value);
          await checkEdit(env, envelope, content, `${from} snapshot, ${leaf.path.join('.')}: ${edit.describe}`);
        }),
        { seed: SEED, numRuns: EDIT_RUNS },
      );
    });

    it.each(TARGETED)('%s', async (what, edit) => {
      for (const policy of ['shadowkv', 'full'] as const) {
        const { envelope, content } = openSnapshot(bases[policy]);
        edit(content);
        await checkEdit(env, envelope, content, `${policy} snapshot, ${what}`);
      }
    });
  });
}, (e) => e.name.startsWith('wasm'));

describe('counts', () => {
  afterAll(() => console.log(`snapshot.fuzz counts: ${JSON.stringify(counts)}`));
  it('ran at least 1000 byte mutations and 300 checksum-valid edits', () => {
    expect(counts.byteMutations).toBeGreaterThanOrEqual(1000);
    expect(counts.edits).toBeGreaterThanOrEqual(300);
  });
});
