import { expect, it } from 'vitest';
import { toFloat32 } from '../dtype.js';
import type { Cache } from '../createCache.js';
import type { CacheConfig } from '../policies/BaseKVCache.js';
import type { MemoryNeed } from '../policies/preflight.js';
import type { Tensor } from '../tensor.js';
import type { TestEnv } from './envs.js';
import { KIT_SPEC, KitInputs } from './inputs.js';
import { relError } from './metrics.js';
import { makeCache, type PolicyUnderTest } from './subject.js';

const { layers } = KIT_SPEC;
const close = (got: Tensor, want: Tensor, tolerance: number, label: string) => expect(relError(toFloat32(got), toFloat32(want)), label).toBeLessThan(tolerance);
const rowOf = (t: Tensor, r: number, rows: number) => Array.from(toFloat32(t).subarray((r * t.data.length) / rows, ((r + 1) * t.data.length) / rows));
/** NOTE: the sparse outputs have no reference to match, and NaN equals NaN in toEqual: so they are checked finite here. */
const finite = (t: Tensor, label: string) => {
  const x = toFloat32(t);
  const i = x.findIndex((v) => !Number.isFinite(v));
  expect(i, `${label}: output element ${i} is ${x[i]}; every output must be finite`).toBe(-1);
};

/** Feeds one cache, then another, the same calls (a prefill or decode of every layer); returns each call's outputs per cache. */
function drive(caches: Cache[], call: (c: Cache, layer: number) => Tensor | undefined): (Tensor | undefined)[][] {
  return Array.from({ length: layers }, (_, l) => caches.map((c) => call(c, l)));
}

/**
 * What every policy must do, whatever it keeps: exact prefill attention, `full`'s outputs when it
 * can attend everything, rows that do not affect each other, `reset` that gives a fresh row and
 * returns the row's memory, and counters that say what a step read.
 */
export function conformanceSuite(p: PolicyUnderTest, env: TestEnv): void {
  it('wide: every output matches full through ragged rows, continuation prefill, row subsets and reset', async () => {
    const caches = [await makeCache(p, 'wide', env), await makeCache(p, 'full', env)];
    const inputs = new KitInputs(1);
    let compared = 0;
    const same = (label: string, outs: (Tensor | undefined)[][]) => outs.forEach(([a, b], l) => {
      if (!a || !b) return;
      close(a, b, env.tolerance, `${label} layer ${l}`);
      compared += 1;
    });
    const prefill = (label: string, rows: number[], S: number, queries: boolean) => {
      const input = Array.from({ length: layers }, () => inputs.prompt(rows.length, S, queries));
      same(label, drive(caches, (c, l) => c.prefill(l, { ...input[l]!, sequences: rows })));
    };
    const decode = (label: string, steps: number, rows?: number[]) => {
      for (let t = 0; t < steps; t++) {
        const input = Array.from({ length: layers }, () => inputs.step(rows?.length ?? 2));
        same(`${label} ${t}`, drive(caches, (c, l) => c.decode(l, input[l]!, { sequences: rows })));
      }
    };
    prefill('prompt of row 0', [0], 150, false);
    prefill('prompt of row 1 with queries', [1], 90, true);
    decode('decode', 4);
    prefill('continuation of row 1 with queries', [1], 29, true);
    decode('decode', 3);
    decode('decode of row 1 alone', 2, [1]);
    caches.forEach((c) => c.reset(0));
    prefill('row 0 refilled with queries', [0], 70, true);
    decode('decode after reset', 3);
    expect(compared).toBe(layers * 15); // 3 prefills with queries, 12 decode steps
    // No step attends more tokens than its row holds (full's count: every one of them).
    const [own, dense] = caches.map((c) => c.stats());
    expect(own!.lastAttendedTokens, `stats().lastAttendedTokens is ${own!.lastAttendedTokens}, but full attends ${dense!.lastAttendedTokens} (every token the rows hold)`).toBeLessThanOrEqual(dense!.lastAttendedTokens);
    expect([caches[0]!.length(0), caches[0]!.length(1)]).toEqual([caches[1]!.length(0), caches[1]!.length(1)]);
    caches.forEach((c) => c.dispose());
  });

  it('tight: prefill with queries is exact causal attention, and decode reads fewer tokens than the row holds, as stats() says', async () => {
    // Sized to the 303 tokens each row ends with, so that memoryNeed below is asked about this very cache.
    const [cache, full] = [await makeCache(p, 'tight', env, 2, 303), await makeCache(p, 'full', env, 2, 303)];
    const inputs = new KitInputs(2);
    const prompt = Array.from({ length: layers }, () => inputs.prompt(2, 300, true));
    drive([cache, full], (c, l) => c.prefill(l, prompt[l]!)).forEach(([a, b], l) => close(a!, b!, env.tolerance, `prefill layer ${l}`));
    for (let t = 0; t < 3; t++) {
      const step = Array.from({ length: layers }, () => inputs.step(2));
      drive([cache, full], (c, l) => c.decode(l, step[l]!)).forEach(([a], l) => finite(a!, `step ${t} layer ${l}`));
    }
    const stats = cache.stats();
    expect(stats.steps).toBe(3 * layers);
    // Both rows hold 303 tokens; a step attends each row's tokens (or fewer) per kv head.
    if (p.dense) expect(stats.lastAttendedTokens).toBe(cache.length(0));
    else expect(stats.lastAttendedTokens, `stats().lastAttendedTokens is ${stats.lastAttendedTokens}, but a sparse step must read fewer than the ${cache.length(0)} tokens a row holds`).toBeLessThan(cache.length(0));
    expect(stats.lastAttendedTokens).toBeGreaterThan(0);
    expect(stats.lastSelectedTokens, `stats().lastSelectedTokens is ${stats.lastSelectedTokens}, more than the ${stats.lastAttendedTokens} tokens attended`).toBeLessThanOrEqual(stats.lastAttendedTokens);
    Object.entries(stats.policy).forEach(([k, n]) => expect(Number.isInteger(n) && n >= 0, `stats().policy.${k} is ${n}; counters are non-negative integers`).toBe(true));
    if (p.evicts) expect(cache.memory().components.exactTail ?? 0).toBeLessThan(0.5 * full.memory().components.exactTail!);
    // The creation preflight trusts memoryNeed: one that underestimates lets a cache through that then
    // runs out of memory mid-generation. Growth and scratch make the two differ a little, not 2x.
    const config = { spec: KIT_SPEC, batch: 2, dtype: env.dtype, backend: env.backend, maxTokens: 303, ...(p.tight as object) } as CacheConfig;
    const need = (cache as unknown as { memoryNeed(c: CacheConfig, batch: number, tokens: number): MemoryNeed }).memoryNeed(config, 2, 303);
    const held = cache.memory();
    const [needBytes, heldBytes] = [need.device + need.transient + need.host, held.device + held.host];
    expect(needBytes, `memoryNeed(config, 2, 303) is ${needBytes} bytes, but this cache of 2 rows of 303 tokens holds ${heldBytes}: the creation preflight would let too large a cache through`).toBeGreaterThanOrEqual(0.5 * heldBytes);
    [cache, full].forEach((c) => c.dispose());
  });

  it('tight: rows are computed alone (a batch of 2 gives what two caches of 1 give), and reset gives a fresh row', async () => {
    const pair = await makeCache(p, 'tight', env);
    const singles = [await makeCache(p, 'tight', env, 1), await makeCache(p, 'tight', env, 1)];
    const inputs = new KitInputs(3);
    const run = (rows: number[], lengths: number[], steps: number) => {
      rows.forEach((r, i) => {
        const prompt = Array.from({ length: layers }, () => inputs.prompt(1, lengths[i]!));
        for (let l = 0; l < layers; l++) {
          pair.prefill(l, { ...prompt[l]!, sequences: [r] });
          singles[r]!.prefill(l, prompt[l]!);
        }
      });
      // Both rows, then row 1 alone (a step must not touch a row it does not name), then both again.
      const schedule = [...Array<number[]>(steps).fill([0, 1]), [1], [1], [0, 1], [0, 1], [0, 1]];
      schedule.forEach((named, t) => {
        for (let l = 0; l < layers; l++) {
          const step = inputs.step(named.length);
          const both = pair.decode(l, step, named.length < 2 ? { sequences: named } : undefined);
          finite(both, `step ${t} layer ${l}`);
          named.forEach((r, i) => {
            const one = singles[r]!.decode(l, { query: slice(step.query, i), key: slice(step.key, i), value: slice(step.value, i) });
            expect(rowOf(both, i, named.length), `step ${t} (rows ${named.join(', ')}) layer ${l} row ${r}`).toEqual(Array.from(toFloat32(one)));
          });
        }
      });
    };
    run([0, 1], [260, 140], 4);
    pair.reset(0);
    singles[0]!.dispose();
    singles[0] = await makeCache(p, 'tight', env, 1);
    run([0], [180], 3);
    [pair, ...singles].forEach((c) => c.dispose());
  });

  it('tight: a step attends the token it appends (whose key dominates every score), and every output is finite', async () => {
    const cache = await makeCache(p, 'tight', env);
    const inputs = new KitInputs(10);
    const { kvHeads: Hkv, headDim: d } = KIT_SPEC;
    const g = KIT_SPEC.queryHeads / Hkv;
    for (let l = 0; l < layers; l++) cache.prefill(l, inputs.prompt(2, 260));
    for (let t = 0; t < 2; t++) for (let l = 0; l < layers; l++) cache.decode(l, inputs.step(2));
    // NOTE: a group's queries all point along the new key (norm sqrt(d)), the key 4x longer: q·k·scale
    // is 16 (RoPE rotates both by the same angle), any other token's ~N(0, 1), so the output is ~ its value.
    for (let l = 0; l < layers; l++) {
      const step = inputs.step(2);
      const q = step.query.data as Float32Array, k = step.key.data as Float32Array, v = step.value.data as Float32Array;
      for (let r = 0; r < 2; r++) {
        for (let h = 0; h < Hkv; h++) {
          const key = k.subarray((r * Hkv + h) * d, (r * Hkv + h + 1) * d);
          const unit = Math.sqrt(d) / Math.hypot(...key);
          for (let j = 0; j < g; j++) q.set(key.map((x) => x * unit), ((r * Hkv + h) * g + j) * d);
          key.forEach((x, i) => (key[i] = 4 * x * unit));
        }
      }
      const out = cache.decode(l, step);
      finite(out, `layer ${l}`);
      const o = toFloat32(out);
      for (let r = 0; r < 2; r++) {
        for (let hq = 0; hq < KIT_SPEC.queryHeads; hq++) {
          const want = v.subarray((r * Hkv + Math.floor(hq / g)) * d, (r * Hkv + Math.floor(hq / g) + 1) * d);
          const err = relError(o.subarray((r * KIT_SPEC.queryHeads + hq) * d, (r * KIT_SPEC.queryHeads + hq + 1) * d), want);
          expect(err, `layer ${l} row ${r} query head ${hq}: the output is ${err.toFixed(3)} (relative) from the new token's value; a step must attend the token it appends`).toBeLessThan(0.05);
        }
      }
    }
    cache.dispose();
  });

  it('tight: reset() returns what the policy holds beyond the reusable tail buffers', async () => {
    const cache = await makeCache(p, 'tight', env);
    const inputs = new KitInputs(4);
    for (let l = 0; l < layers; l++) cache.prefill(l, inputs.prompt(2, 260, true));
    for (let t = 0; t < 3; t++) for (let l = 0; l < layers; l++) cache.decode(l, inputs.step(2));
    cache.reset();
    const kept = ['exactTail', 'rope', 'counters', 'scratch'];
    const left = Object.entries(cache.memory().components).filter(([tag, bytes]) => !kept.includes(tag) && bytes > 0);
    expect(left).toEqual([]);
    expect(cache.memory().host).toBe(0);
    cache.dispose();
  });
}

/** Row r of a `[rows, ...]` host tensor. */
function slice(t: Tensor, r: number): Tensor {
  const n = t.data.length / t.shape[0]!;
  return { data: t.data.subarray(r * n, (r + 1) * n) as Float32Array, shape: [1, ...t.shape.slice(1)], dtype: t.dtype };
}
