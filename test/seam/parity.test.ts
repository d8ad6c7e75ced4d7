import { expect, it } from 'vitest';
import { createCache, toFloat32, type ShadowKVCache } from '../../packages/shadowkv/src/backend.js';
import { scenarioSteps } from '../conformance/scenarioInputs.js';
import { SCENARIOS } from '../conformance/scenarios.js';
import { forEachEnv } from '../envs.js';
import { registerComposed } from '../helpers/backends.js';

// The fused layer step (one runtime call) against decodeLayerComposed (the same ops one by one) on
// every conformance scenario: identical selections, identical outputs, identical state after. On
// CUDA the fused kernels share their device code with the ops, so the same holds bit for bit.
forEachEnv('fused step matches the composed reference', (env) => {
  it.each(SCENARIOS.map((s) => [s.name, s] as const))('%s', async (_, sc) => {
    const composed = registerComposed(env.backend);
    const make = (backend: string) => createCache({ spec: sc.spec, policy: 'shadowkv', batch: sc.batch, dtype: env.dtype, backend, options: sc.options });
    const fused = await make(env.backend);
    const reference = await make(composed);
    let decodes = 0;
    for (const ev of scenarioSteps(sc, env.dtype)) {
      if (ev.kind === 'reset') {
        for (const c of [fused, reference]) c.reset(ev.sequence);
      } else if (ev.kind === 'prefill') {
        const input = { keys: ev.keys.t, values: ev.values.t, queries: ev.queries?.t, sequences: ev.sequences };
        const [a, b] = [fused, reference].map((c) => c.prefill(ev.layer, input));
        if (a || b) expect(Array.from(toFloat32(a!))).toEqual(Array.from(toFloat32(b!)));
      } else {
        const input = { query: ev.query.t, key: ev.key.t, value: ev.value.t };
        const [a, b] = [fused, reference].map((c) => toFloat32(c.decode(ev.layer, input)));
        expect(Array.from(a!), `decode step ${ev.step} layer ${ev.layer}`).toEqual(Array.from(b!));
        for (let r = 0; r < sc.batch; r++) {
          for (let h = 0; h < sc.spec.kvHeads; h++) expect(fused.selection(ev.layer, r, h)).toEqual(reference.selection(ev.layer, r, h));
        }
        decodes += 1;
      }
    }
    expect(decodes).toBeGreaterThanOrEqual(20);
    expect(fused.stats()).toEqual(reference.stats());
    expect(fused.stats().compactions).toBeGreaterThan(0);
    expect(fused.stats().hitRate).toBeGreaterThan(0);
    // Every byte of state (tails, stores, host pages, slots, counters) is the same.
    expect(Buffer.from(fused.save()).equals(Buffer.from(reference.save()))).toBe(true);
    for (const c of [fused, reference] as ShadowKVCache[]) c.dispose();
  });
});
