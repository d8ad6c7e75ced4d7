// Shared by the adversarial suites (test/adversarial/): the run's seed, typed-error checks, the
// snapshot codec with a recomputed checksum, and the consistency check of a restored cache.
import { readFileSync } from 'node:fs';
import { Packr } from 'msgpackr';
import { loadCache, ShadowKVError, type Cache, type ShadowKVCache, type Tensor } from '../../packages/shadowkv/src/backend.js';
import { crc32 } from '../../packages/shadowkv/src/snapshot.js';
import { randn, rng } from './data.js';

/** The run's seed: `SKV_SEED` from the environment, else a fixed one. */
export const SEED = process.env.SKV_SEED ? Number(process.env.SKV_SEED) : 20261130;

/** Prints the seed a file runs with, so that a failure replays (fast-check prints its own on failure too). */
export function announceSeed(file: string): number {
  console.log(`${file}: SKV_SEED=${SEED} (replay: SKV_SEED=${SEED} npx vitest run ${file})`);
  return SEED;
}

/** Every code of errors/codes.ts, read from the source so that a code added there counts here. */
export const ERROR_CODES: ReadonlySet<string> = new Set(
  [...readFileSync(new URL('../../packages/shadowkv/src/errors/codes.ts', import.meta.url), 'utf8').matchAll(/'(SKV_[A-Z_]+)'/g)].map((m) => m[1]!),
);

/** What `thrown` returns when the call did not throw. */
export const NO_ERROR = Symbol('no error');

export function thrown(call: () => unknown): unknown {
  try {
    call();
  } catch (err) {
    return err;
  }
  return NO_ERROR;
}

export async function rejection(call: () => Promise<unknown>): Promise<unknown> {
  try {
    await call();
  } catch (err) {
    return err;
  }
  return NO_ERROR;
}

/** A `ShadowKVError` whose code is one of codes.ts (never a TypeError, RangeError or wasm RuntimeError). */
export function isTyped(err: unknown): err is ShadowKVError {
  return err instanceof ShadowKVError && ERROR_CODES.has(err.code);
}

/** One line naming what was thrown. */
export function showError(err: unknown): string {
  if (err === NO_ERROR) return 'no error (the call went through)';
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return `${err.constructor.name}${typeof code === 'string' ? ` ${code}` : ''}: ${err.message.slice(0, 240)}`;
  }
  return `a thrown ${typeof err}`;
}

// ---- snapshots ----

// NOTE: the same options as snapshot.ts, so typed arrays stay typed both ways.
const packr = new Packr({ moreTypes: true, structuredClone: false, useRecords: false });

export interface OpenedSnapshot {
  envelope: Record<string, unknown>;
  content: Record<string, unknown>;
}

/** Decodes `save()` bytes into the envelope and the payload's content (fresh objects on every call). */
export function openSnapshot(bytes: Uint8Array): OpenedSnapshot {
  const envelope = packr.unpack(bytes) as Record<string, unknown>;
  const content = packr.unpack(envelope.payload as Uint8Array) as Record<string, unknown>;
  return { envelope, content };
}

/** Re-encodes content into an envelope with the right CRC-32, as `save()` would. */
export function sealSnapshot(envelope: Record<string, unknown>, content: Record<string, unknown>): Uint8Array {
  // NOTE: msgpackr may hand back views of a buffer it reuses, so both results are copied.
  const payload = Buffer.from(packr.pack(content));
  return new Uint8Array(packr.pack({ ...envelope, crc32: crc32(payload), payload }));
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

// ---- consistency of a cache ----

type Row = { length: number; tail: { count: number; k: ArrayLike<number>; v: ArrayLike<number> }; store?: Store };
type Store = {
  tokens: number; rank: number; u: ArrayLike<number>; sv: ArrayLike<number>; proj: ArrayLike<number>;
  heads: {
    values: ArrayLike<number>; outlierIds: ArrayLike<number>; outlierK: ArrayLike<number>; outlierV: ArrayLike<number>;
    landmarkIds: ArrayLike<number>; landmarks: ArrayLike<number>; selected: ArrayLike<number>; selectedK: ArrayLike<number>; selectedV: ArrayLike<number>;
  }[];
};

/** Finite elements only (f32 values, or 16-bit patterns whose exponent is not all ones). */
function finite(x: ArrayLike<number>, dtype: string): boolean {
  const mask = dtype === 'f16' ? 0x7c00 : 0x7f80;
  for (let i = 0; i < x.length; i++) {
    if (dtype === 'f32' ? !Number.isFinite(x[i]!) : (x[i]! & mask) === mask) return false;
  }
  return true;
}

const ascending = (ids: ArrayLike<number>) => Array.from(ids).every((x, i, a) => i === 0 || x > a[i - 1]!);
const inRange = (ids: ArrayLike<number>, n: number) => Array.from(ids).every((x) => Number.isInteger(x) && x >= 0 && x < n);

/**
 * Problems in a snapshot's content: each row's length is its compressed tokens plus its tail, every
 * array has the type and length its counts imply, data is finite, chunk ids are ascending, in
 * range, and outliers and landmarks split the compressed chunks; selected chunks are landmarks.
 */
export function contentProblems(content: Record<string, unknown>): string[] {
  const p: string[] = [];
  const spec = content.spec as { kvHeads: number; headDim: number };
  const cache = content.cache as { dtype: string; maxTokens: number };
  const o = content.options as Record<string, number>;
  const { kvHeads: Hkv, headDim: d } = spec;
  const Ctor = cache.dtype === 'f32' ? Float32Array : Uint16Array;
  const typed = (where: string, name: string, x: unknown, n: number) => {
    if (!(x instanceof Ctor) || x.length !== n) {
      p.push(`${where}: ${name} is ${(x as object)?.constructor?.name}[${(x as { length?: number })?.length}], expected ${Ctor.name}[${n}]`);
    } else if (!finite(x, cache.dtype)) p.push(`${where}: ${name} holds a non-finite element`);
  };
  const ids = (where: string, name: string, x: unknown): number[] => {
    if (!(x instanceof Int32Array)) {
      p.push(`${where}: ${name} is a ${(x as object)?.constructor?.name}, expected Int32Array`);
      return [];
    }
    return Array.from(x);
  };
  (content.layers as Row[][]).forEach((row, l) =>
    row.forEach((st, s) => {
      const where = `layer ${l} row ${s}`;
      const tokens = st.store?.tokens ?? 0;
      if (st.length !== tokens + st.tail.count) p.push(`${where}: length ${st.length} is not compressed ${tokens} + tail ${st.tail.count}`);
      if (!(st.length >= 0 && st.length <= cache.maxTokens)) p.push(`${where}: length ${st.length} is outside [0, maxTokens ${cache.maxTokens}]`);
      typed(where, 'tail.k', st.tail.k, st.tail.count * Hkv * d);
      typed(where, 'tail.v', st.tail.v, st.tail.count * Hkv * d);
      const store = st.store;
      if (!store) return;
      const C = o.chunkSize!;
      const chunks = tokens / C;
      if (!Number.isInteger(chunks) || chunks < 1) p.push(`${where}: store.tokens ${tokens} is not a positive multiple of chunkSize ${C}`);
      if (!(Number.isInteger(store.rank) && store.rank >= 1 && store.rank <= Math.min(o.rank!, tokens))) p.push(`${where}: store.rank ${store.rank} is outside [1, min(rank ${o.rank}, tokens ${tokens})]`);
      typed(where, 'store.u', store.u, tokens * store.rank);
      typed(where, 'store.sv', store.sv, store.rank * Hkv * d);
      typed(where, 'store.proj', store.proj, Hkv * d * store.rank);
      if (store.heads.length !== Hkv) p.push(`${where}: store has ${store.heads.length} heads, expected ${Hkv}`);
      const maxOutliers = o.outlierChunks! + Math.ceil(o.sinkTokens! / C);
      store.heads.forEach((h, i) => {
        const at = `${where} head ${i}`;
        typed(at, 'values', h.values, chunks * C * d);
        const out = ids(at, 'outlierIds', h.outlierIds);
        const lm = ids(at, 'landmarkIds', h.landmarkIds);
        const sel = ids(at, 'selected', h.selected);
        if (!ascending(out) || !inRange(out, chunks) || out.length > maxOutliers) p.push(`${at}: outlier ids [${out}] are not ascending ids in [0, ${chunks}) (at most ${maxOutliers})`);
        if (!ascending(lm) || !inRange(lm, chunks)) p.push(`${at}: landmark ids [${lm.slice(0, 12)}…] are not ascending ids in [0, ${chunks})`);
        const all = new Set([...out, ...lm]);
        if (all.size !== chunks || out.length + lm.length !== chunks) p.push(`${at}: outliers (${out.length}) and landmarks (${lm.length}) do not split the ${chunks} chunks`);
        if (new Set(sel).size !== sel.length || !sel.every((c) => lm.includes(c)) || sel.length > o.budget! / C) p.push(`${at}: selected [${sel}] are not distinct landmark chunks (at most ${o.budget! / C})`);
        typed(at, 'outlierK', h.outlierK, out.length * C * d);
        typed(at, 'outlierV', h.outlierV, out.length * C * d);
        typed(at, 'landmarks', h.landmarks, lm.length * d);
        typed(at, 'selectedK', h.selectedK, sel.length * C * d);
        typed(at, 'selectedV', h.selectedV, sel.length * C * d);
      });
    }),
  );
  return p;
}

/**
 * Differences of `got` from `want`, value by value (a typed array may come back as another type
 * holding the same numbers); fields `want` lacks (undefined or null) are skipped: a loader may fill
 * in a default, and the consistency checks judge the result.
 */
export function valueDifferences(want: unknown, got: unknown, path = '', out: string[] = []): string[] {
  if (out.length > 8) return out;
  if (want === undefined || want === null) return out;
  const isArrayLike = (x: unknown): x is ArrayLike<unknown> => Array.isArray(x) || ArrayBuffer.isView(x);
  if (isArrayLike(want) && !(want instanceof DataView)) {
    if (!isArrayLike(got) || got instanceof DataView || got.length !== want.length) {
      out.push(`${path}: ${describeValue(want)} was restored as ${describeValue(got)}`);
      return out;
    }
    if (ArrayBuffer.isView(want)) {
      for (let i = 0; i < want.length; i++) {
        if (!Object.is(Number(want[i]), Number(got[i]))) {
          out.push(`${path}[${i}]: ${String(want[i])} was restored as ${String(got[i])}`);
          return out;
        }
      }
      return out;
    }
    for (let i = 0; i < want.length; i++) valueDifferences(want[i], (got as unknown[])[i], `${path}[${i}]`, out);
    return out;
  }
  if (want !== null && typeof want === 'object') {
    if (got === null || typeof got !== 'object') {
      out.push(`${path}: ${describeValue(want)} was restored as ${describeValue(got)}`);
      return out;
    }
    for (const k of Object.keys(want)) valueDifferences((want as Record<string, unknown>)[k], (got as Record<string, unknown>)[k], `${path}.${k}`, out);
    return out;
  }
  if (!Object.is(want, got)) out.push(`${path}: ${describeValue(want)} was restored as ${describeValue(got)}`);
  return out;
}

export function describeValue(x: unknown): string {
  if (ArrayBuffer.isView(x)) return `${x.constructor.name}[${(x as unknown as ArrayLike<number>).length}]`;
  if (Array.isArray(x)) return `Array[${x.length}]`;
  if (typeof x === 'string') return JSON.stringify(x);
  if (x !== null && typeof x === 'object') return `{${Object.keys(x).join(', ')}}`;
  return String(x);
}

/** Random f32 decode inputs for `rows` rows. */
export function decodeInput(spec: { queryHeads: number; kvHeads: number; headDim: number }, rows: number, rand: () => number): { query: Tensor; key: Tensor; value: Tensor } {
  const { queryHeads: Hq, kvHeads: Hkv, headDim: d } = spec;
  const t = (h: number): Tensor => ({ data: randn(rows * h * d, rand, 1, new Float32Array(rows * h * d)), shape: [rows, h, 1, d], dtype: 'f32' });
  return { query: t(Hq), key: t(Hkv), value: t(Hkv) };
}

export interface RestoredCheck {
  backend: string;
  seed: number;
  /** Bytes the restored cache's wasm heap may reach (absent: not checked). */
  heapLimit?: number;
  /** The content the cache was loaded from: what it saves must hold the same values. */
  loadedFrom?: Record<string, unknown>;
}

/**
 * Everything a cache must satisfy, whatever calls (or snapshot) made it: consistent content,
 * `save → loadCache → save` byte-identical, finite outputs of one valid decode step per layer,
 * selections ascending within `[0, length / chunkSize)`, `stats()` and `memory()` answering, the
 * wasm heap within `heapLimit`. Returns the problems found (empty when consistent). Decodes, so
 * the cache changes.
 */
export async function cacheProblems(cache: Cache, o: RestoredCheck): Promise<string[]> {
  const p: string[] = [];
  const attempt = async (what: string, f: () => unknown): Promise<boolean> => {
    try {
      await f();
      return true;
    } catch (err) {
      p.push(`${what} threw ${showError(err)}`);
      return false;
    }
  };
  let bytes: Uint8Array | undefined;
  if (!(await attempt('save()', () => (bytes = cache.save())))) return p;
  const { content } = openSnapshot(bytes!);
  if (o.loadedFrom) p.push(...valueDifferences(o.loadedFrom, content, 'snapshot').map((d) => `restored state differs from the snapshot: ${d}`));
  try {
    p.push(...contentProblems(content));
  } catch (err) {
    p.push(`content is malformed: ${showError(err)}`);
  }
  const { layers, batch } = { layers: cache.spec.layers, batch: (content.cache as { batch: number }).batch };
  for (let l = 0; l < layers; l++) {
    for (let s = 0; s < batch; s++) {
      await attempt(`length(${s}, ${l})`, () => {
        const n = cache.length(s, l);
        const saved = (content.layers as Row[][])[l]![s]!.length;
        if (n !== saved) p.push(`length(${s}, ${l}) is ${n}, the snapshot says ${saved}`);
      });
    }
  }
  // save → loadCache → save is byte-identical.
  await attempt('loadCache(save())', async () => {
    const again = await loadCache(bytes!, { backend: o.backend });
    try {
      if (!sameBytes(again.save(), bytes!)) p.push('save → loadCache → save is not byte-identical');
    } finally {
      again.dispose();
    }
  });
  await attempt('stats()', () => {
    const { policy, ...st } = cache.stats();
    const fields = [...Object.entries(st), ...Object.entries(policy).map(([k, v]) => [`policy.${k}`, v] as const)];
    for (const [k, v] of fields) if (!Number.isFinite(v)) p.push(`stats().${k} is ${String(v)}`);
  });
  await attempt('memory()', () => checkHeap(cache, o.heapLimit, p, 'after load'));
  // One valid decode step per layer for every row with room left.
  const maxTokens = (content.cache as { maxTokens: number }).maxTokens;
  const rand = rng(o.seed);
  for (let l = 0; l < layers; l++) {
    const rows = Array.from({ length: batch }, (_, s) => s).filter((s) => cache.length(s, l) < maxTokens);
    if (!rows.length) continue;
    const ok = await attempt(`decode(layer ${l}) of rows [${rows}]`, () => {
      const out = cache.decode(l, decodeInput(cache.spec, rows.length, rand), { sequences: rows });
      if (!finite(out.data, out.dtype)) p.push(`decode(layer ${l}) gave a non-finite output`);
    });
    if (!ok) break;
  }
  if (cache.name === 'shadowkv') {
    const c = cache as ShadowKVCache;
    const C = c.options.chunkSize;
    for (let l = 0; l < layers; l++) {
      for (let s = 0; s < batch; s++) {
        for (let h = 0; h < cache.spec.kvHeads; h++) {
          await attempt(`selection(${l}, ${s}, ${h})`, () => {
            const sel = c.selection(l, s, h);
            const chunks = Math.floor(c.length(s, l) / C);
            if (!ascending(sel) || !inRange(sel, chunks)) p.push(`selection(${l}, ${s}, ${h}) is [${sel}], not ascending in [0, ${chunks})`);
          });
        }
      }
    }
  }
  await attempt('memory()', () => checkHeap(cache, o.heapLimit, p, 'after a decode step'));
  return p;
}

function checkHeap(cache: Cache, limit: number | undefined, p: string[], when: string): void {
  const m = cache.memory();
  if (limit !== undefined && (m.wasmHeap ?? 0) > limit) p.push(`wasm heap is ${m.wasmHeap} bytes ${when}, over the bound ${limit}`);
  if (!(m.device >= 0 && m.host >= 0)) p.push(`memory() reports device ${m.device}, host ${m.host}`);
}
