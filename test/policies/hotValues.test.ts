// ShadowKV's hot-value cache (`hotChunks`): a device cache of value chunks beyond the selection.
// It changes where the selected slots' bytes come from, never the bytes: outputs, selections and
// the slot counters are those of the same cache without it, while fewer bytes cross from the host.
import { expect, it } from 'vitest';
import { ConfigError, createCache, LLAMA3_8B, loadCache, OutOfMemoryError, toFloat32, type ShadowKVCache } from '../../packages/shadowkv/src/backend.js';
import { decodeSnapshot, encodeSnapshot } from '../../packages/shadowkv/src/snapshot.js';
import { COUNTER } from '../../packages/shadowkv/src/backends/LayerStep.js';
import { scenarioSteps, type ScenarioStep } from '../conformance/scenarioInputs.js';
import { SCENARIOS, type Scenario } from '../conformance/scenarios.js';
import { forEachEnv } from '../envs.js';

// Ragged rows, drifting queries, compaction; the same inputs at every cache size (they follow the name).
const base = SCENARIOS[0]!;
const sized = (hotChunks: number): Scenario => ({ ...base, options: { ...base.options, hotChunks } });

/** Runs the scenario's events on a cache; each decode's output (f32) goes to `outs`. */
function play(c: ShadowKVCache, events: ScenarioStep[], outs: number[][]): void {
  for (const ev of events) {
    if (ev.kind === 'reset') c.reset(ev.sequence);
    else if (ev.kind === 'prefill') c.prefill(ev.layer, { keys: ev.keys.t, values: ev.values.t, queries: ev.queries?.t, sequences: ev.sequences });
    else outs.push(Array.from(toFloat32(c.decode(ev.layer, { query: ev.query.t, key: ev.key.t, value: ev.value.t }))));
  }
}

forEachEnv('shadowkv: the hot-value cache', (env) => {
  const make = (sc: Scenario) => createCache({ spec: sc.spec, policy: 'shadowkv', batch: sc.batch, dtype: env.dtype, backend: env.backend, options: sc.options });

  // 3 slots collide often; 13 is about the selection (8 chunks); 64 holds every chunk of the shorter rows.
  it.each([3, 13, 64])('%i slots per kv head: outputs, selections and slot hits as without it; misses served on the device', async (slots) => {
    const events = [...scenarioSteps(base, env.dtype)];
    const [hot, off] = [await make(sized(slots)), await make(sized(0))];
    const [a, b] = [[], []] as number[][][];
    play(hot, events, a);
    play(off, events, b);
    expect(a.length).toBeGreaterThan(40);
    a.forEach((out, i) => expect(out, `decode ${i}`).toEqual(b[i]));
    for (let l = 0; l < base.spec.layers; l++)
      for (let r = 0; r < base.batch; r++) for (let h = 0; h < base.spec.kvHeads; h++) expect(hot.selection(l, r, h)).toEqual(off.selection(l, r, h));
    const [s, t] = [hot.stats(), off.stats()];
    expect([s.hitRate, s.lastHits, s.lastMisses, s.compactions]).toEqual([t.hitRate, t.lastHits, t.lastMisses, t.compactions]);
    expect(t.hotHitRate).toBe(0);
    expect(s.hotHitRate).toBeGreaterThan(0);
    expect(s.hotHitRate).toBeLessThanOrEqual(1);
    // What the cache served did not cross from the host.
    expect(s.bytesFetched).toBeCloseTo(t.bytesFetched * (1 - s.hotHitRate), 6);
    expect(s.lastBytesFetched).toBe(t.lastBytesFetched - s.lastHotHits * (t.lastBytesFetched / Math.max(t.lastMisses, 1)));
    expect(hot.memory().components.hotValues).toBeGreaterThan(0);
    expect(off.memory().components.hotValues ?? 0).toBe(0);
    [hot, off].forEach((c) => c.dispose());
  });

  it('a larger cache serves at least as many misses here (64 slots hold every chunk of the shorter rows)', async () => {
    const events = [...scenarioSteps(base, env.dtype)];
    const rates = [];
    for (const slots of [3, 64]) {
      const c = await make(sized(slots));
      play(c, events, []);
      rates.push(c.stats().hotHitRate);
      c.dispose();
    }
    expect(rates[1]).toBeGreaterThan(rates[0]!);
  });

  it('a snapshot taken mid-stream restores without the cache and decodes the same outputs', async () => {
    const events = [...scenarioSteps(base, env.dtype)];
    const cut = events.findIndex((e) => e.kind === 'decode') + 20;
    const hot = await make(sized(13));
    play(hot, events.slice(0, cut), []);
    const restored = await loadCache(hot.save(), { backend: env.backend }) as ShadowKVCache;
    expect(restored.stats()).toEqual(hot.stats());
    const [a, b] = [[], []] as number[][][];
    play(hot, events.slice(cut), a);
    play(restored, events.slice(cut), b);
    expect(b).toEqual(a);
    // The restored cache started empty, so it fetched at least as much from the host.
    expect(restored.stats().bytesFetched).toBeGreaterThanOrEqual(hot.stats().bytesFetched);
    [hot, restored].forEach((c) => c.dispose());
  });
});

it('a snapshot of version 2 (12 counters per layer, before the hot-value cache) restores with the cache counters at zero', async () => {
  const events = [...scenarioSteps(base, 'f32')];
  const c = await createCache({ spec: base.spec, policy: 'shadowkv', batch: base.batch, dtype: 'f32', options: base.options });
  play(c, events, []);
  const content = decodeSnapshot(c.save()) as { layerCounters: Float64Array[] };
  const dropHot = (x: Float64Array) => Float64Array.from(x.filter((_, i) => i !== COUNTER.hotHits && i !== COUNTER.lastHotHits));
  content.layerCounters = content.layerCounters.map(dropHot);
  expect(content.layerCounters[0]!.length).toBe(12);
  const old = await loadCache(encodeSnapshot(content)) as ShadowKVCache;
  const [s, t] = [c.stats(), old.stats()];
  expect(s.hotHitRate).toBeGreaterThan(0);
  expect({ ...t, hotHitRate: s.hotHitRate, lastHotHits: s.lastHotHits, bytesFetched: s.bytesFetched, lastBytesFetched: s.lastBytesFetched }).toEqual(s);
  expect([t.hotHitRate, t.lastHotHits]).toEqual([0, 0]);
  [c, old].forEach((x) => x.dispose());
});

it('the creation preflight counts the cache and names hotChunks when it is set', async () => {
  const make = (options: object) => createCache({ spec: LLAMA3_8B, policy: 'shadowkv', batch: 64, maxTokens: 131072, options }).then(() => new Error('created'), (e: unknown) => e as Error);
  const [hot, off] = [await make({ hotChunks: 8192 }), await make({})];
  expect(hot).toBeInstanceOf(OutOfMemoryError);
  expect(off).toBeInstanceOf(OutOfMemoryError);
  const need = (e: Error) => Number(/needs ([\d.]+) GiB of device memory/.exec(e.message)![1]);
  // 32 layers x 64 rows x 8 kv heads x 8192 slots: x 8 tokens x 128 x 2 bytes of values (256 GiB) and 4-byte ids (0.5).
  expect(need(hot) - need(off)).toBeCloseTo(256.5, 1);
  expect(hot.message).toMatch(/lower hotChunks, budget, rank or maxRecentTokens/);
  expect(off.message).not.toMatch(/hotChunks/);
});

it('hotChunks that is negative, fractional, not a number or past 65536 tokens of slots is a ConfigError naming it', async () => {
  for (const hotChunks of [-1, 2.5, Number.NaN, '8', 65536 / 4 + 1]) {
    await expect(createCache({ spec: base.spec, policy: 'shadowkv', options: { ...base.options, hotChunks: hotChunks as number } })).rejects.toThrow(ConfigError);
    await expect(createCache({ spec: base.spec, policy: 'shadowkv', options: { ...base.options, hotChunks: hotChunks as number } })).rejects.toThrow(/hotChunks/);
  }
  const ok = await createCache({ spec: base.spec, policy: 'shadowkv', options: { ...base.options, hotChunks: 65536 / 4 } });
  ok.dispose();
});
