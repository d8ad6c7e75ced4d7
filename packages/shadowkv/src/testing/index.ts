/**
 * shadowkv/testing: the conformance kit. `runPolicyConformance` runs, with vitest, the suites every
 * built-in policy passes (conformance, bad input, snapshots, and wasm-vs-CUDA parity where a GPU
 * is) on any registered policy, once per available (backend, storage dtype).
 * @packageDocumentation
 */
import { forEachEnv } from './envs.js';
import { badInputSuite } from './badInput.js';
import { conformanceSuite } from './conformance.js';
import { paritySuite } from './parity.js';
import { snapshotSuite } from './snapshot.js';
import type { PolicyUnderTest } from './subject.js';

export { BAD_INPUT_CASES, badInputSuite } from './badInput.js';
export { conformanceSuite } from './conformance.js';
export { ENVS, forEachEnv, type TestEnv } from './envs.js';
export { KIT_SPEC, KitInputs } from './inputs.js';
export { cosine, relError } from './metrics.js';
export { paritySuite } from './parity.js';
export { randn, rng } from './random.js';
export { snapshotSuite } from './snapshot.js';
export { makeCache, type KitEnv, type PolicyUnderTest } from './subject.js';

/**
 * Every suite of the kit on one policy; call it at the top level of a vitest file, after the
 * policy is registered.
 * @example
 * import { runPolicyConformance } from 'shadowkv/testing';
 * registerPolicy('mine', createMine);
 * runPolicyConformance({ name: 'mine', wide: { budget: 4096 }, tight: { budget: 64 } });
 */
export function runPolicyConformance<P extends string>(p: PolicyUnderTest<P>): void {
  const subject = p as unknown as PolicyUnderTest;
  forEachEnv(`${p.name}: conformance`, (env) => conformanceSuite(subject, env));
  // NOTE: f16 storage behaves as bf16 does for these two and doubles their time.
  forEachEnv(`${p.name}: bad input`, (env) => badInputSuite(subject, env), (e) => e.dtype !== 'f16');
  forEachEnv(`${p.name}: snapshots`, (env) => snapshotSuite(subject, env), (e) => e.dtype !== 'f16');
  paritySuite(subject, `${p.name}: parity`);
}
