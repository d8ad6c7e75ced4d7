// Copies the built wasm runtime next to the bundle so the npm package needs no toolchain.
// `node scripts/copy-wasm.mjs [distDir]`: the bundle's folder, packages/shadowkv/dist unless given
// (test/api/packaging.test.ts builds the package into a scratch folder).
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const from = new URL('../runtime/wasm/out/', import.meta.url);
const dist = process.argv[2] ? pathToFileURL(`${process.argv[2]}/`) : new URL('../packages/shadowkv/dist/', import.meta.url);
const to = new URL('wasm/', dist);
mkdirSync(to, { recursive: true });
for (const file of ['shadowkv-simd.wasm', 'shadowkv.wasm']) {
  if (!existsSync(new URL(file, from))) {
    console.error(`copy-wasm: ${file} is missing; run \`npm run build:wasm\` first`);
    process.exit(1);
  }
  copyFileSync(new URL(file, from), new URL(file, to));
}
