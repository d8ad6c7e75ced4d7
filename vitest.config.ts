import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// In this repository 'shadowkv' (and its subpaths) is the source, no build needed: tsc and tsx read
// tsconfig.json's paths, and vitest gets the same map from there, so a test file imports the SDK as a user's does.
const { paths } = JSON.parse(readFileSync(new URL('tsconfig.json', import.meta.url), 'utf8')).compilerOptions as { paths: Record<string, [string]> };

export default defineConfig({
  resolve: {
    alias: Object.entries(paths).map(([name, [file]]) => ({ find: new RegExp(`^${name}$`), replacement: fileURLToPath(new URL(file, import.meta.url)) })),
  },
  test: {
    include: ['test/**/*.test.ts', 'examples/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
