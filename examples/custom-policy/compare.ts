// A custom policy next to the built-in ones: register it, run it on the same inputs as `full`.
// Run: npx tsx examples/custom-policy/compare.ts
import { createCache, toFloat32 } from '../../packages/shadowkv/src/backend.js';
import { cosine } from '../workloads/metrics.js';
import { NeedleWorkload } from '../workloads/needle.js';
import { registerLandmarkWindow } from './LandmarkWindowCache.js';

registerLandmarkWindow();
const spec = { layers: 1, queryHeads: 8, kvHeads: 2, headDim: 64, rope: { theta: 10000 } };
const work = new NeedleWorkload(spec, { tokens: 2000, depth: 0.5 });
const caches = {
  full: await createCache({ spec, policy: 'full', dtype: 'f32' }),
  'streaming(4 + 252)': await createCache({ spec, policy: 'streaming', dtype: 'f32', options: { sinkTokens: 4, windowTokens: 252 } }),
  'landmark-window(192 + 64)': await createCache({ spec, policy: 'landmark-window', dtype: 'f32', options: { budget: 192, recentTokens: 64 } }),
  'shadowkv(budget 256)': await createCache({ spec, policy: 'shadowkv', dtype: 'f32', options: { budget: 256, rank: 64, denseThreshold: 1024 } }),
};
const prompt = work.prompt(0);
for (const c of Object.values(caches)) c.prefill(0, prompt);
const step = work.step(0);
const reference = toFloat32(caches.full.decode(0, step));
for (const [name, c] of Object.entries(caches)) {
  const out = toFloat32(name === 'full' ? { data: reference, shape: [], dtype: 'f32' } : c.decode(0, step));
  console.log(`${name.padEnd(26)} cosine to full ${cosine(out, reference).toFixed(4)}   attended ${c.stats().lastAttendedTokens}   device memory ${(c.memory().device / 2 ** 20).toFixed(1)} MiB`);
  c.dispose();
}
console.log('(the needle sits mid-prompt: a recent window cannot see it; chunk selection finds it)');
