// Prefill attention with queries where a tile's rows fill whole 4-row blocks (4 query heads a kv
// head): the padding block past the last one was zeroed anyway, past the end of the scratch, which
// corrupted the wasm heap and made the next decode trap (bench/NOTES.md v47; examples/llama.ts
// --tokens 40 hit it). Every prompt length from 1 to 80 tokens in a tail sized to it (d 64), then decode steps, on every env.
import { expect, it } from 'vitest';
import { createCache, toFloat32 } from '../../packages/shadowkv/src/backend.js';
import { KitInputs } from '../../packages/shadowkv/src/testing/inputs.js';
import { forEachEnv } from '../envs.js';

const spec = { layers: 1, queryHeads: 8, kvHeads: 2, headDim: 64, rope: { theta: 500000 } };

forEachEnv('prefill attention with queries, any prompt length', (env) => {
  it('leaves the heap sound: later steps run and give finite outputs', async () => {
    for (let S = 1; S <= 80; S++) {
      const cache = await createCache({ spec, policy: 'full', dtype: env.dtype, backend: env.backend, maxTokens: S + 2 });
      const inputs = new KitInputs(S, spec);
      cache.prefill(0, inputs.prompt(1, S, true));
      for (let t = 0; t < 2; t++) expect(toFloat32(cache.decode(0, inputs.step(1)) as never).every(Number.isFinite), `S ${S}`).toBe(true);
      cache.dispose();
    }
  });
});
