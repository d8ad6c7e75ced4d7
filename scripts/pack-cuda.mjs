// Packs shadowkv-cuda as npm installs it, beside the `shadowkv` package: its sources bundled into one
// ES module whose imports of the SDK's sources become imports of 'shadowkv/backend' (so its errors
// and tensors are the user's shadowkv classes, not copies), the addon built here
// (runtime/cuda/build, where `bash scripts/build-cuda.sh` put it) as prebuilds/linux-x64/, and a
// manifest whose exports name the bundle. In this repository the package stays its sources
// (packages/shadowkv-cuda/package.json), which tsx and vitest run as they are.
// Usage: node scripts/pack-cuda.mjs <outDir>   builds <outDir>/shadowkv-cuda/, packs it into <outDir>
// and prints the tarball's path (test/api/packaging.test.ts installs it in a consumer project).
import { build } from 'tsup';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = process.argv[2];
if (!out || process.argv.length > 3) {
  console.error('usage: node scripts/pack-cuda.mjs <outDir>');
  process.exit(2);
}
const sdk = join(root, 'packages/shadowkv/src/');
const source = JSON.parse(readFileSync(join(root, 'packages/shadowkv-cuda/package.json'), 'utf8'));
const sdkVersion = JSON.parse(readFileSync(join(root, 'packages/shadowkv/package.json'), 'utf8')).version;
const pkg = join(resolve(out), 'shadowkv-cuda');
rmSync(pkg, { recursive: true, force: true });
mkdirSync(join(pkg, 'dist'), { recursive: true });

await build({
  entry: { index: join(root, 'packages/shadowkv-cuda/src/index.ts') },
  outDir: join(pkg, 'dist'),
  format: ['esm'],
  platform: 'node',
  target: 'node20',
  sourcemap: true,
  dts: false,
  silent: true,
  config: false,
  tsconfig: join(root, 'packages/shadowkv-cuda/tsconfig.json'),
  esbuildPlugins: [{
    name: 'the SDK as a peer',
    setup(b) {
      b.onResolve({ filter: /shadowkv\/src\// }, (args) => (resolve(args.resolveDir, args.path).startsWith(sdk) ? { path: 'shadowkv/backend', external: true } : undefined));
    },
  }],
});

const addon = join(root, 'runtime/cuda/build/Release/shadowkv_cuda.node');
const prebuilt = existsSync(addon);
if (prebuilt) {
  mkdirSync(join(pkg, 'prebuilds/linux-x64'), { recursive: true });
  copyFileSync(addon, join(pkg, 'prebuilds/linux-x64/shadowkv_cuda.node'));
} else {
  console.error('pack-cuda: runtime/cuda/build has no addon (no nvcc here?): the package carries none, and says so when loaded');
}
copyFileSync(join(root, 'packages/shadowkv-cuda/README.md'), join(pkg, 'README.md'));
copyFileSync(join(root, 'LICENSE'), join(pkg, 'LICENSE'));
const manifest = {
  name: source.name,
  version: source.version,
  description: source.description,
  license: source.license,
  type: 'module',
  main: './dist/index.js',
  exports: { '.': './dist/index.js' },
  files: ['dist', 'prebuilds'],
  engines: source.engines,
  os: ['linux'],
  cpu: ['x64'],
  peerDependencies: { shadowkv: sdkVersion },
};
writeFileSync(join(pkg, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
const [packed] = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', resolve(out)], { cwd: pkg, encoding: 'utf8' }));
console.log(join(resolve(out), packed.filename));
