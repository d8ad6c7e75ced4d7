// Runs in a browser: the wasm backend fetches shadowkv-simd.wasm beside this bundle.
// Build and check: bash scripts/browser-check.sh
import { createCache, toFloat32 } from '../../packages/shadowkv/src/index.js';
import { cosine } from '../workloads/metrics.js';
import { NeedleWorkload } from '../workloads/needle.js';

const out = document.getElementById('result')!;
try {
  const spec = { layers: 1, queryHeads: 8, kvHeads: 2, headDim: 64, rope: { theta: 10000 } };
  const work = new NeedleWorkload(spec, { tokens: 3000 });
  const options = { budget: 256, rank: 48, denseThreshold: 1024 };
  const shadow = await createCache({ spec, policy: 'shadowkv', dtype: 'bf16', options });
  const full = await createCache({ spec, policy: 'full', dtype: 'bf16' });
  const prompt = work.prompt(0);
  shadow.prefill(0, prompt);
  full.prefill(0, prompt);
  const step = work.step(0);
  const a = toFloat32(shadow.decode(0, step));
  const b = toFloat32(full.decode(0, step));
  out.textContent = `ok backend=${shadow.backendInfo.description} compressions=${shadow.stats().compressions} cosine=${cosine(a, b).toFixed(4)}`;
} catch (err) {
  out.textContent = `error ${(err as Error).name}: ${(err as Error).message}`;
}
