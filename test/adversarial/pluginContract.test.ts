// The plugin kit's contract under a misbehaving policy or runtime: what a factory, a hook or a kit
// helper is given back is checked, and a call either goes through whole or changes nothing. Cases
// from trying it as a policy author would (bench/NOTES.md v47); each test covers the case's class.
import { describe, expect, it } from 'vitest';
import {
  ChunkScoringCache, ConfigError, createCache, definePolicyOptions, FullKVCache, loadCache, PolicyCache, QuestCache, registerPolicy, toFloat32, type CacheConfig,
  type Runtime, type View,
} from '../../packages/shadowkv/src/backend.js';
import { attendRows } from '../../packages/shadowkv/src/policies/plugin/attendRows.js';
import type { Attended } from '../../packages/shadowkv/src/policies/BaseKVCache.js';
import { KitInputs } from '../../packages/shadowkv/src/testing/inputs.js';
import { faults, registerFaultyWasm } from '../helpers/backends.js';

const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const same = (a: unknown, b: unknown) => expect(Array.from(toFloat32(a as never))).toEqual(Array.from(toFloat32(b as never)));

// Allocations of one tag refused while `refused.tag` names it.
const refused: { tag?: string } = {};
faults.fail = (tag) => tag === refused.tag;
const faulty = registerFaultyWasm();

describe('a committed call does not half-fail in its after-hooks', () => {
  it("quest's summaries that cannot grow wait for a later call: every row takes the prompt, the deferred chunks are attended exactly, then summarized", async () => {
    const make = (backend: string) => createCache({ spec, batch: 2, policy: 'quest', dtype: 'f32', backend, options: { chunkSize: 4, budget: 8, recentTokens: 0 } });
    const [cache, twin] = [await make(faulty), await make('wasm')];
    const inputs = new KitInputs(1, spec);
    const first = inputs.prompt(2, 60);
    [cache, twin].forEach((c) => c.prefill(0, first)); // 15 chunks: summaries room for 64
    refused.tag = 'chunkSummaries';
    const more = inputs.prompt(2, 300);
    [cache, twin].forEach((c) => c.prefill(0, more));
    expect([cache.length(0), cache.length(1)]).toEqual([360, 360]);
    const step = inputs.step(2);
    // The 75 chunks not summarized do not compete: attended exactly, beside the top 2 of the first 15.
    const out = toFloat32(cache.decode(0, step) as never);
    expect(out.every(Number.isFinite)).toBe(true);
    expect(cache.stats().lastAttendedTokens).toBe(2 * 4 + 361 - 15 * 4);
    twin.decode(0, step);
    refused.tag = undefined;
    // The next call summarizes them after its step; from the step after, the twin's outputs.
    const next = inputs.step(2);
    [cache, twin].forEach((c) => c.decode(0, next));
    const last = inputs.step(2);
    same(cache.decode(0, last), twin.decode(0, last));
    [cache, twin].forEach((c) => c.dispose());
  });

  it("a chunk-scoring hook that throws on a later row leaves every row's selection as it was", async () => {
    type FlakyOptions = { chunkSize?: number; budget?: number; recentTokens?: number };
    class Flaky extends ChunkScoringCache<FlakyOptions> {
      readonly name = 'flaky';
      protected readonly summaryWidth = spec.headDim;
      calls = 0;
      failOn = -1;
      constructor(c: CacheConfig, r?: Runtime) {
        super(c, definePolicyOptions<FlakyOptions>({ chunkSize: { default: 4, min: 1, max: 64 }, budget: { default: 8, min: 1, max: 64 }, recentTokens: { default: 0, min: 0, max: 64 } }), r);
      }
      protected summarizeChunks(keys: View, chunks: number, out: View): void {
        this.device.landmarks(keys, spec.headDim, chunks, 4, spec.headDim, out, { buf: this.device.scratch('flaky.mincos', chunks, 'f32'), offset: 0 });
      }
      protected scoringQueries(q: View, out: View): void {
        if (this.calls++ === this.failOn) throw new Error('flaky: the second row');
        this.device.copy(out, q, spec.queryHeads * spec.headDim);
      }
    }
    registerPolicy('flaky', (c, r) => new Flaky(c, r));
    const cache = (await createCache({ spec, batch: 2, policy: 'flaky', dtype: 'f32', backend: 'wasm' } as never)) as unknown as Flaky;
    const inputs = new KitInputs(2, spec);
    cache.prefill(0, inputs.prompt(2, 100));
    cache.decode(0, inputs.step(2));
    const before = [0, 1].flatMap((s) => [0, 1].map((h) => cache.selection(0, s, h)));
    const bytes = cache.save();
    cache.failOn = cache.calls + 1;
    expect(() => cache.decode(0, inputs.step(2))).toThrow(/the second row/);
    expect([0, 1].flatMap((s) => [0, 1].map((h) => cache.selection(0, s, h)))).toEqual(before);
    expect(Buffer.from(cache.save()).equals(Buffer.from(bytes))).toBe(true);
    cache.dispose();
  });

  it('compress() skips a row that onProgress compressed (by a decode) or reset meanwhile', async () => {
    const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 };
    for (const meanwhile of ['decode', 'reset'] as const) {
      const cache = await createCache({ spec, batch: 2, policy: 'shadowkv', dtype: 'f32', backend: 'wasm', options });
      const inputs = new KitInputs(3, spec);
      cache.prefill(0, inputs.prompt(2, 100));
      const done = cache.compress({ onProgress: () => (meanwhile === 'decode' ? cache.decode(0, inputs.step(2)) : cache.reset(1)) });
      // It returns the pairs it compressed itself (as the guide says): the skipped one is not counted.
      expect(done, meanwhile).toBe(1);
      expect(cache.stats().compressions, meanwhile).toBe(meanwhile === 'decode' ? 2 : 1);
      expect(toFloat32(cache.decode(0, inputs.step(2)) as never).every(Number.isFinite)).toBe(true);
      cache.dispose();
    }
  });
});

describe('what a factory returns is a new cache of its policy, on the runtime it was given', () => {
  it('anything else is a ConfigError, and nothing is left allocated', async () => {
    class Renamed extends QuestCache {}
    const kept = await createCache({ spec, policy: 'full', backend: 'wasm' });
    const factories: [string, (c: CacheConfig, r?: Runtime) => unknown, RegExp][] = [
      ['inherits-quest', (c, r) => new Renamed(c as never, r), /made a cache named 'quest'; give its class `readonly name = 'inherits-quest'`/],
      ['own-runtime', (c) => new FullKVCache({ ...c, backend: 'wasm' }), /built its cache on a runtime of its own/],
      ['not-a-cache', () => ({}), /returned something other than a cache/],
      ['hands-out-again', () => kept, /returned a cache it had made before/],
    ];
    for (const [name, factory, message] of factories) {
      registerPolicy(name, factory as never);
      await expect(createCache({ spec, policy: name, backend: 'wasm' } as never), name).rejects.toThrow(message);
    }
    expect(kept.length(0)).toBe(0); // the cache handed out again still works
    kept.dispose();
  });

  it("a plugin subclassing a built-in and named its own way restores as itself, not as the built-in", async () => {
    class Centered extends QuestCache {
      override readonly name = 'centered-quest' as never;
    }
    registerPolicy('centered-quest', (c, r) => new Centered(c as never, r));
    const cache = await createCache({ spec, policy: 'centered-quest', dtype: 'f32', backend: 'wasm' } as never);
    cache.prefill(0, new KitInputs(4, spec).prompt(1, 50));
    expect((await loadCache(cache.save(), { backend: 'wasm' })).constructor).toBe(Centered);
    cache.dispose();
  });
});

describe("a hook's result and the kit's helpers take only what they can use", () => {
  it("attendDecode's counts must be non-negative integers, returned synchronously; a refused one leaves the cache as it was", async () => {
    let give: unknown = { tokens: 1 };
    class Counting extends PolicyCache<{ k?: number }> {
      readonly name = 'counting';
      constructor(c: CacheConfig, r?: Runtime) {
        super(c, definePolicyOptions<{ k?: number }>({ k: { default: 1, min: 0, max: 1 } }), r);
      }
      protected override attendDecode(layer: number, seq: number, q: View, out: View): Attended {
        const st = this.states[layer]![seq]!;
        for (let h = 0; h < spec.kvHeads; h++) attendRows(this.device, st.tail, h, 2, this.spec.scale, [[0, st.tail.count]], q, out);
        return give as Attended;
      }
    }
    registerPolicy('counting', (c, r) => new Counting(c, r));
    const cache = await createCache({ spec, policy: 'counting', dtype: 'f32', backend: 'wasm' } as never);
    const inputs = new KitInputs(5, spec);
    cache.prefill(0, inputs.prompt(1, 20));
    cache.decode(0, inputs.step(1));
    const bytes = cache.save();
    for (const bad of [undefined, null, 5, { tokens: Number.NaN }, { tokens: 1.5 }, { tokens: -5 }, { tokens: 3, hits: Infinity }, { selected: 2 }, Promise.resolve({ tokens: 1 })]) {
      give = bad;
      expect(() => cache.decode(0, inputs.step(1)), String(bad)).toThrow(ConfigError);
    }
    expect(Buffer.from(cache.save()).equals(Buffer.from(bytes))).toBe(true);
    cache.dispose();
  });

  it('tail.evict refuses rows out of range, repeated, unsorted or uneven across heads, before any row moves; attendRows refuses runs past the rows held', async () => {
    const cache = await createCache({ spec, policy: 'full', dtype: 'f32', backend: 'wasm' });
    cache.prefill(0, new KitInputs(6, spec).prompt(1, 12));
    const tail = (cache as unknown as { states: { tail: import('../../packages/shadowkv/src/policies/ExactRegion.js').ExactRegion }[][] }).states[0]![0]!.tail;
    const bytes = cache.save();
    const rows = (...r: number[]) => Int32Array.from(r);
    for (const keep of [[rows(0, 1, 520), rows(0, 1, 2)], [rows(0, 5, 5), rows(0, 1, 2)], [rows(0, -1, 3), rows(0, 1, 2)], [rows(9, 3, 1), rows(1, 3, 9)], [rows(0, 1), rows(0, 1, 2)], [rows(0, 1, 2)], [rows(), rows()]]) {
      expect(() => tail.evict(keep), JSON.stringify(keep.map((k) => Array.from(k)))).toThrow(ConfigError);
    }
    expect(() => tail.evict([rows(0, 1), rows(0, 1)], 1)).toThrow(/capacity must be an integer of at least the 2 rows kept/);
    expect(Buffer.from(cache.save()).equals(Buffer.from(bytes))).toBe(true);
    const q = { buf: (cache as unknown as { device: { scratch(n: string, l: number, d: string): never } }).device.scratch('t.q', 64, 'f32'), offset: 0 };
    for (const runs of [[[0, 13]], [[-8, 4]], [[0, Number.NaN]], [[0, 1.5]], [[0, 1e9]]] as [number, number][][]) {
      expect(() => attendRows((cache as unknown as { device: never }).device, tail, 0, 2, 0.25, runs, q, q), JSON.stringify(runs)).toThrow(/attendRows\(\): run .* is not within the 12 rows held/);
    }
    cache.dispose();
  });

  it("definePolicyOptions checks its own rules: a default its rule refuses, min > max, a cache option's name; an option named like an Object method reads only the caller's key", () => {
    expect(() => definePolicyOptions<{ w?: number }>({ w: { default: -5, min: 1, max: 10 } })).toThrow(/the default of w must be an integer in \[1, 10\], got -5/);
    expect(() => definePolicyOptions<{ w?: number }>({ w: { default: 2.5, min: 1, max: 10 } })).toThrow(ConfigError);
    expect(() => definePolicyOptions<{ m?: string }>({ m: { default: 'c', oneOf: ['a', 'b'] } })).toThrow(/the default of m must be one of 'a', 'b'/);
    expect(() => definePolicyOptions<{ w?: number }>({ w: { default: 5, min: 10, max: 1 } })).toThrow(/min <= max/);
    expect(() => definePolicyOptions<{ batch?: number }>({ batch: { default: 1, min: 1, max: 8 } })).toThrow(/'batch' is an option of every cache/);
    const o = definePolicyOptions<{ toString?: number }>({ toString: { default: 3, min: 1, max: 8 } });
    expect(o.resolve('test', {})).toEqual({ toString: 3 });
  });
});
