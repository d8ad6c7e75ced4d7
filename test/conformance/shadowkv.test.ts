import { expect, it } from 'vitest';
import { forEachEnv } from '../envs.js';
import { runScenario } from './runScenario.js';
import { SCENARIOS } from './scenarios.js';

// End-to-end ShadowKVCache against the float64 oracle of docs/algorithm.md: selections first
// (only near-ties may differ), then outputs at the backend's tolerance, then reuse counts.
forEachEnv('ShadowKVCache matches the oracle', (env) => {
  it.each(SCENARIOS.map((s) => [s.name, s] as const))('%s', async (_, sc) => {
    const reports = await runScenario(env, sc, 'shadowkv');
    const decodes = reports.filter((r) => r.label.startsWith('decode'));
    expect(decodes.length).toBeGreaterThanOrEqual(20);
    for (const r of reports) {
      expect(r.selectionMismatches, `${r.label} layer ${r.layer}`).toEqual([]);
      expect(r.error, `${r.label} layer ${r.layer}`).toBeLessThan(env.tolerance);
    }
    // Near-ties flip a selection on at most a few percent of (step, row) pairs, never in f32.
    const rows = decodes.length * sc.batch;
    const tieRows = decodes.reduce((n, r) => n + r.tieRows, 0);
    expect(tieRows).toBeLessThanOrEqual(env.dtype === 'f32' ? 0 : Math.ceil(0.05 * rows));
    if (env.dtype === 'f32') {
      for (const r of decodes) expect(r.hits!.cache, `${r.label} layer ${r.layer} hits`).toBe(r.hits!.oracle);
      expect(decodes.reduce((n, r) => n + r.hits!.cache, 0)).toBeGreaterThan(0); // reuse happened
    }
  });
});

forEachEnv('FullKVCache matches the oracle', (env) => {
  it.each(SCENARIOS.map((s) => [s.name, s] as const))('%s', async (_, sc) => {
    const reports = await runScenario(env, sc, 'full');
    for (const r of reports) expect(r.error, `${r.label} layer ${r.layer}`).toBeLessThan(env.tolerance);
  });
});
