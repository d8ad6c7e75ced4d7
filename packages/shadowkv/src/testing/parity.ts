import { describe, expect, it } from 'vitest';
import { toFloat32 } from '../dtype.js';
import type { DType } from '../tensor.js';
import { ENVS, type TestEnv } from './envs.js';
import { KIT_SPEC, KitInputs } from './inputs.js';
import { relError } from './metrics.js';
import { makeCache, type PolicyUnderTest } from './subject.js';

/**
 * The same inputs through the policy on wasm and on CUDA, per storage dtype: every output within
 * the looser backend's tolerance. Runs where a CUDA device is; elsewhere listed as skipped, with why.
 */
export function paritySuite(p: PolicyUnderTest, title: string): void {
  for (const dtype of ['f32', 'bf16'] as DType[]) {
    const wasm = ENVS.ready.find((e) => e.backend === 'wasm' && e.dtype === dtype);
    const cuda = ENVS.ready.find((e) => e.backend === 'cuda' && e.dtype === dtype);
    if (!wasm || !cuda) {
      const reason = ENVS.skipped.find((e) => e.name === `cuda-${dtype}`)?.reason ?? 'no wasm backend';
      describe.skip(`${title} [wasm vs cuda, ${dtype}] skipped: ${reason}`, () => it('parity', () => {}));
      continue;
    }
    describe(`${title} [wasm vs cuda, ${dtype}]`, () => {
      it('tight: every output of wasm and cuda agrees', async () => compare(p, wasm, cuda));
    });
  }
}

async function compare(p: PolicyUnderTest, a: TestEnv, b: TestEnv): Promise<void> {
  const caches = [await makeCache(p, 'tight', a), await makeCache(p, 'tight', b)];
  const inputs = new KitInputs(9);
  const tolerance = Math.max(a.tolerance, b.tolerance);
  for (let l = 0; l < KIT_SPEC.layers; l++) {
    const input = inputs.prompt(2, 260, true);
    const [x, y] = caches.map((c) => toFloat32(c.prefill(l, input)!));
    expect(relError(x!, y!), `prefill layer ${l}`).toBeLessThan(tolerance);
  }
  for (let t = 0; t < 10; t++) {
    for (let l = 0; l < KIT_SPEC.layers; l++) {
      const input = inputs.step(2);
      const [x, y] = caches.map((c) => toFloat32(c.decode(l, input)));
      expect(relError(x!, y!), `step ${t} layer ${l}`).toBeLessThan(tolerance);
    }
  }
  caches.forEach((c) => c.dispose());
}
