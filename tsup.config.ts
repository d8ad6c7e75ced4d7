import { defineConfig } from 'tsup';

// The SDK package: ESM with declarations; scripts/copy-wasm.mjs puts the runtime beside it.
export default defineConfig({
  entry: { index: 'packages/shadowkv/src/index.ts', backend: 'packages/shadowkv/src/backend.ts', testing: 'packages/shadowkv/src/testing/index.ts' },
  outDir: 'packages/shadowkv/dist',
  format: ['esm'],
  target: 'node20',
  dts: { compilerOptions: { rootDir: 'packages/shadowkv/src' } },
  tsconfig: 'packages/shadowkv/tsconfig.json',
  sourcemap: true,
  clean: true,
  external: ['msgpackr', 'shadowkv-cuda', 'vitest'],
});
