// ShadowKV's fp8 host tier (`fp8Values`): values kept on the host as E4M3 codes with a power-of-two
// scale per token row. Every scenario matches the float64 oracle whose stored chunks come back as
// fp8 (test/oracle/fp8.ts); the fused step and the composed ops read and write the same codes (bit
// for bit); outputs stay close to those of the same cache with values in the storage dtype; the host
// tier and the bytes a miss moves shrink to fp8ChunkBytes per chunk.
import { expect, it } from 'vitest';
import { ConfigError, createCache, estimateMemory, toFloat32 } from '../../packages/shadowkv/src/backend.js';
import { fp8ChunkBytes } from '../../packages/shadowkv/src/backends/Device.js';
import { scenarioSteps, type ScenarioStep } from '../conformance/scenarioInputs.js';
import { SCENARIOS, type Scenario } from '../conformance/scenarios.js';
import { forEachEnv } from '../envs.js';
import { registerComposed, registerWithoutFp8 } from '../helpers/backends.js';
import { runScenario } from '../conformance/runScenario.js';
import { expectRestoredAlike, play } from '../helpers/scenarioPlay.js';

// Ragged rows, drifting queries, compaction across pages, a hot-value cache: every writer and reader of the tier.
const base = SCENARIOS[0]!;
const fp8: Scenario = { ...base, options: { ...base.options, fp8Values: true } };

/** Largest |a - b| over all outputs. */
function maxDiff(a: number[][], b: number[][]): number {
  return Math.max(...a.map((x, i) => Math.max(...x.map((v, j) => Math.abs(v - b[i]![j]!)))));
}

/** Largest |value| the events write. */
function maxValue(events: ScenarioStep[]): number {
  let m = 0;
  for (const ev of events) {
    const t = ev.kind === 'prefill' ? ev.values.t : ev.kind === 'decode' ? ev.value.t : undefined;
    if (t) for (const x of toFloat32(t)) m = Math.max(m, Math.abs(x));
  }
  return m;
}

forEachEnv('shadowkv: fp8 values on the host tier', (env) => {
  const make = (sc: Scenario, backend = env.backend) =>
    createCache({ spec: sc.spec, policy: 'shadowkv', batch: sc.batch, dtype: env.dtype, backend, options: sc.options });

  // The float64 oracle with its stored chunks as the fp8 tier returns them (test/oracle/fp8.ts,
  // written from the format, not from fp8.h): every scenario, at the backend's usual tolerance.
  it.each(SCENARIOS.map((s) => [s.name, s] as const))('matches the oracle: %s', async (_, sc) => {
    const reports = await runScenario(env, { ...sc, options: { ...sc.options, fp8Values: true } }, 'shadowkv');
    expect(reports.filter((r) => r.label.startsWith('decode')).length).toBeGreaterThanOrEqual(20);
    for (const r of reports) {
      expect(r.selectionMismatches, `${r.label} layer ${r.layer}`).toEqual([]);
      expect(r.error, `${r.label} layer ${r.layer}`).toBeLessThan(env.tolerance);
    }
  });

  it('the fused step gives the bits of the composed ops, and outputs within a few percent of the storage dtype', async () => {
    const events = [...scenarioSteps(base, env.dtype)];
    const [fused, composed, plain] = [await make(fp8), await make(fp8, registerComposed(env.backend)), await make(base)];
    const [a, b, c] = [[], [], []] as number[][][];
    play(fused, events, a);
    play(composed, events, b);
    play(plain, events, c);
    expect(a.length).toBeGreaterThan(40);
    expect(b).toEqual(a);
    for (let l = 0; l < base.spec.layers; l++)
      for (let r = 0; r < base.batch; r++) for (let h = 0; h < base.spec.kvHeads; h++) expect(composed.selection(l, r, h)).toEqual(fused.selection(l, r, h));
    // Selection reads only keys and landmarks, so it is the storage dtype's; a value moves by at most
    // 2^-4 of its row's largest magnitude, and an output is a convex mix of values, so it moves by at
    // most 2^-4 of the largest value (plus the storage dtype's rounding of the dequantized values).
    for (let l = 0; l < base.spec.layers; l++)
      for (let r = 0; r < base.batch; r++) for (let h = 0; h < base.spec.kvHeads; h++) expect(fused.selection(l, r, h)).toEqual(plain.selection(l, r, h));
    const err = maxDiff(a, c) / maxValue(events);
    expect(err).toBeGreaterThan(0);
    expect(err).toBeLessThan(0.0625 * 1.01);
    [fused, composed, plain].forEach((x) => x.dispose());
  });

  it('the host tier and the bytes a miss moves are fp8 chunks, as estimateMemory says', async () => {
    const events = [...scenarioSteps(base, env.dtype)];
    const [q, p] = [await make(fp8), await make(base)];
    play(q, events, []);
    play(p, events, []);
    const { chunkSize: C } = base.options, d = base.spec.headDim;
    const bytes = (dt: string) => (dt === 'f32' ? 4 : 2);
    const ratio = fp8ChunkBytes(C, d) / (C * d * bytes(env.dtype));
    expect(q.memory().host).toBe(p.memory().host * ratio);
    const [s, t] = [q.stats(), p.stats()];
    expect([s.hitRate, s.lastMisses]).toEqual([t.hitRate, t.lastMisses]);
    expect(s.bytesFetched).toBeCloseTo(t.bytesFetched * ratio, 6);
    const est = (o: object) => estimateMemory({ spec: base.spec, policy: 'shadowkv', tokens: 4096, batch: 2, dtype: env.dtype, options: { ...base.options, ...o } });
    expect(est({ fp8Values: true }).host).toBe(est({}).host * ratio);
    [q, p].forEach((x) => x.dispose());
  });

  it('a snapshot keeps the dequantized values: restored, it decodes the same outputs', async () => {
    await expectRestoredAlike(await make(fp8), [...scenarioSteps(base, env.dtype)], env.backend);
  });
});

forEachEnv('shadowkv: fp8 values where the backend has no fp8 host tier', (env) => {
  it('is a ConfigError naming fp8Values', async () => {
    const backend = registerWithoutFp8(env.backend);
    const err = await createCache({ spec: base.spec, policy: 'shadowkv', backend, options: fp8.options }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(new RegExp(`fp8Values: the ${backend} backend has no fp8 host tier`));
  });
});

it('fp8Values that is not a boolean is a ConfigError naming it', async () => {
  for (const fp8Values of [1, 'true', null]) {
    await expect(createCache({ spec: base.spec, policy: 'shadowkv', options: { ...base.options, fp8Values: fp8Values as never } })).rejects.toThrow(/fp8Values must be true or false/);
  }
});
