// Copies the built wasm runtime next to the bundle so the npm package needs no toolchain.
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';

const from = new URL('../runtime/wasm/out/', import.meta.url);
const to = new URL('../packages/shadowkv/dist/wasm/', import.meta.url);
mkdirSync(to, { recursive: true });
for (const file of ['shadowkv-simd.wasm', 'shadowkv.wasm']) {
  if (!existsSync(new URL(file, from))) {
    console.error(`copy-wasm: ${file} is missing; run \`npm run build:wasm\` first`);
    process.exit(1);
  }
  copyFileSync(new URL(file, from), new URL(file, to));
}
