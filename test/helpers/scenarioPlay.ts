// Playing a conformance scenario's events on a ShadowKV cache, for the host-tier tests (fp8 and
// packed values): the outputs of each decode, and a snapshot's restore checked against the original.
import { expect } from 'vitest';
import { loadCache, toFloat32, type ShadowKVCache } from '../../packages/shadowkv/src/backend.js';
import type { ScenarioStep } from '../conformance/scenarioInputs.js';

/** Runs the events on a cache; each decode's output (f32) goes to `outs`. */
export function play(c: ShadowKVCache, events: ScenarioStep[], outs: number[][]): void {
  for (const ev of events) {
    if (ev.kind === 'reset') c.reset(ev.sequence);
    else if (ev.kind === 'prefill') c.prefill(ev.layer, { keys: ev.keys.t, values: ev.values.t, queries: ev.queries?.t, sequences: ev.sequences });
    else outs.push(Array.from(toFloat32(c.decode(ev.layer, { query: ev.query.t, key: ev.key.t, value: ev.value.t }))));
  }
}

/** Outputs as their f32 bits, so that -0 and NaN compare too. */
export const outputBits = (outs: number[][]): number[][] => outs.map((row) => Array.from(new Uint32Array(Float32Array.from(row).buffer)));

/** Plays the events up to 20 decodes in, saves and restores the cache, and checks that both decode the rest alike (bit for bit: -0 and NaN too). */
export async function expectRestoredAlike(c: ShadowKVCache, events: ScenarioStep[], backend: string): Promise<void> {
  const cut = events.findIndex((e) => e.kind === 'decode') + 20;
  play(c, events.slice(0, cut), []);
  const restored = (await loadCache(c.save(), { backend })) as ShadowKVCache;
  const [a, b] = [[], []] as number[][][];
  play(c, events.slice(cut), a);
  play(restored, events.slice(cut), b);
  expect(outputBits(b)).toEqual(outputBits(a));
  [c, restored].forEach((x) => x.dispose());
}
