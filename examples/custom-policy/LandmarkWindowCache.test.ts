// The plugin through the same kit as the built-in policies (shadowkv/testing): conformance, bad
// input, snapshots, and wasm-vs-CUDA parity where a GPU is.
import { expect, it } from 'vitest';
import { ConfigError, createCache } from '../../packages/shadowkv/src/backend.js';
import { KIT_SPEC, runPolicyConformance } from '../../packages/shadowkv/src/testing/index.js';
import { registerLandmarkWindow } from './LandmarkWindowCache.js';

registerLandmarkWindow();
registerLandmarkWindow(); // the same factory again: a no-op

runPolicyConformance({ name: 'landmark-window', wide: { budget: 1024 }, tight: { budget: 32, chunkSize: 8, recentTokens: 16 } });

it('landmark-window: a budget that is not a multiple of the chunk size is a ConfigError naming both', async () => {
  await expect(createCache({ spec: KIT_SPEC, policy: 'landmark-window', options: { budget: 30, chunkSize: 8 } })).rejects.toThrow(ConfigError);
  await expect(createCache({ spec: KIT_SPEC, policy: 'landmark-window', options: { budget: 30, chunkSize: 8 } })).rejects.toThrow(/budget \(30\) must be a multiple of chunkSize \(8\)/);
});
