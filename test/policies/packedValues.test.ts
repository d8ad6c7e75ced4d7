// ShadowKV's packed host tier (`packedValues`): bf16 values kept on the host with their exponents
// packed, lossless. Every writer of the tier (the prompt's values, the fused and the composed
// compaction, snapshot restores) and every reader (the fused fetch, the hot-value cache, the
// gather) give the same bits as the plain tier, on values that pack and on values that must stay
// raw (tiny beside large, subnormals); the tier costs one byte a chunk of device tables.
import { expect, it } from 'vitest';
import { ConfigError, createCache, estimateMemory } from '../../packages/shadowkv/src/backend.js';
import { scenarioSteps, type ScenarioStep } from '../conformance/scenarioInputs.js';
import { SCENARIOS, type Scenario } from '../conformance/scenarios.js';
import { forEachEnv } from '../envs.js';
import { registerComposed, registerWithoutPack } from '../helpers/backends.js';
import { expectRestoredAlike, outputBits, play } from '../helpers/scenarioPlay.js';

const packed = (sc: Scenario): Scenario => ({ ...sc, options: { ...sc.options, packedValues: true } });

/**
 * The events (bf16) with values that keep some chunks raw: in every third token one value 2^-20 of
 * itself (its exponent field less 20), in every fifth a subnormal and a -0.
 */
function widened(events: ScenarioStep[], d: number): ScenarioStep[] {
  const widen = <T extends { data: unknown }>(t: T): T => {
    const x = Uint16Array.from(t.data as Uint16Array);
    for (let row = 0; row * d < x.length; row++) {
      const e = (x[row * d + 1]! >> 7) & 0xff;
      if (row % 3 === 1 && e > 20) x[row * d + 1] = x[row * d + 1]! - (20 << 7);
      if (row % 5 === 2) x.set([0x0003, 0x8000], row * d + 2);
    }
    return { ...t, data: x };
  };
  return events.map((ev) =>
    ev.kind === 'prefill' ? { ...ev, values: { ...ev.values, t: widen(ev.values.t) } }
      : ev.kind === 'decode' ? { ...ev, value: { ...ev.value, t: widen(ev.value.t) } }
        : ev);
}

forEachEnv('shadowkv: packed values on the host tier', (env) => {
  const make = (sc: Scenario, backend = env.backend) =>
    createCache({ spec: sc.spec, policy: 'shadowkv', batch: sc.batch, dtype: env.dtype, backend, options: sc.options });

  // Ragged rows, drifting queries, compaction across pages, hot-value caches, dense layers: every
  // scenario, on values as drawn and on values widened so that some chunks stay raw.
  it.each(SCENARIOS.map((s) => [s.name, s] as const))('the same output bits and selections as the plain tier: %s', async (_, sc) => {
    for (const events of [[...scenarioSteps(sc, env.dtype)], widened([...scenarioSteps(sc, env.dtype)], sc.spec.headDim)]) {
      const [p, q, r] = [await make(sc), await make(packed(sc)), await make(packed(sc), registerComposed(env.backend))];
      const [a, b, c] = [[], [], []] as number[][][];
      play(p, events, a);
      play(q, events, b);
      play(r, events, c);
      expect(a.length).toBeGreaterThan(0);
      expect(outputBits(b)).toEqual(outputBits(a));
      expect(outputBits(c)).toEqual(outputBits(a));
      for (let l = 0; l < sc.spec.layers; l++)
        for (let row = 0; row < sc.batch; row++) for (let h = 0; h < sc.spec.kvHeads; h++) expect(q.selection(l, row, h)).toEqual(p.selection(l, row, h));
      expect([q.stats().hitRate, q.stats().bytesFetched]).toEqual([p.stats().hitRate, p.stats().bytesFetched]);
      [p, q, r].forEach((x) => x.dispose());
    }
  });

  it('costs one byte a chunk of device tables, nothing on the host, as estimateMemory says', async () => {
    const sc = SCENARIOS[0]!;
    const events = widened([...scenarioSteps(sc, env.dtype)], sc.spec.headDim);
    const [p, q] = [await make(sc), await make(packed(sc))];
    play(p, events, []);
    play(q, events, []);
    const [mp, mq] = [p.memory(), q.memory()];
    expect(mq.host).toBe(mp.host);
    expect(mq.components.tables!).toBeGreaterThan(mp.components.tables!);
    const est = (o: object) => estimateMemory({ spec: sc.spec, policy: 'shadowkv', tokens: 4096, batch: 2, dtype: env.dtype, options: { ...sc.options, ...o } });
    const [ep, eq] = [est({}), est({ packedValues: true })];
    expect(eq.host).toBe(ep.host);
    // About a byte for each of the 2 rows' 512 chunks of each kv head and layer (the store's capacity rounds up).
    const chunks = 2 * sc.spec.layers * sc.spec.kvHeads * (4096 / sc.options.chunkSize!);
    expect(eq.components.tables! - ep.components.tables!).toBeGreaterThanOrEqual(chunks * 0.9);
    expect(eq.components.tables! - ep.components.tables!).toBeLessThanOrEqual(chunks * 1.1);
    [p, q].forEach((x) => x.dispose());
  });

  it('a snapshot restores the same values: restored, it decodes the same bits', async () => {
    const sc = SCENARIOS[0]!;
    await expectRestoredAlike(await make(packed(sc)), widened([...scenarioSteps(sc, env.dtype)], sc.spec.headDim), env.backend);
  });
}, (e) => e.dtype === 'bf16');

forEachEnv('shadowkv: packed values where they cannot be', (env) => {
  it('a storage dtype other than bf16 is a ConfigError naming packedValues and the dtype', async () => {
    const sc = SCENARIOS[0]!;
    const err = await createCache({ spec: sc.spec, policy: 'shadowkv', dtype: env.dtype, backend: env.backend, options: packed(sc).options }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(new RegExp(`packedValues packs bf16 exponents; this cache stores ${env.dtype}`));
    // estimateMemory refuses what createCache refuses, with the same words.
    const estimate = () => estimateMemory({ spec: sc.spec, policy: 'shadowkv', tokens: 4096, dtype: env.dtype, options: packed(sc).options });
    expect(estimate).toThrow(ConfigError);
    expect(estimate).toThrow((err as Error).message);
  });
}, (e) => e.dtype !== 'bf16');

forEachEnv('shadowkv: packed values where the backend has no packed host tier', (env) => {
  it('is a ConfigError naming packedValues', async () => {
    const backend = registerWithoutPack(env.backend);
    const sc = SCENARIOS[0]!;
    const err = await createCache({ spec: sc.spec, policy: 'shadowkv', dtype: 'bf16', backend, options: packed(sc).options }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(new RegExp(`packedValues: the ${backend} backend has no packed host tier`));
  });
}, (e) => e.dtype === 'bf16');

it('packedValues that is not a boolean, or beside fp8Values, is a ConfigError naming it', async () => {
  const sc = SCENARIOS[0]!;
  for (const packedValues of [1, 'true', null]) {
    await expect(createCache({ spec: sc.spec, policy: 'shadowkv', dtype: 'bf16', options: { ...sc.options, packedValues: packedValues as never } })).rejects.toThrow(/packedValues must be true or false/);
  }
  await expect(createCache({ spec: sc.spec, policy: 'shadowkv', dtype: 'bf16', options: { ...sc.options, packedValues: true, fp8Values: true } })).rejects.toThrow(/packedValues and fp8Values are two formats of the host tier: choose one/);
});
