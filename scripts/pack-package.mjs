// Packs a workspace package that runs from its sources here (shadowkv-cuda, shadowkv-llama) as npm
// installs it beside the `shadowkv` package: its sources bundled into ES modules and its types into
// one declaration file, both with imports of the SDK's sources turned into imports of 'shadowkv/backend'
// (so its errors, tensors and runtime are the user's shadowkv, not copies), its files (shadowkv-cuda:
// the addon built here by `bash scripts/build-cuda.sh`, as prebuilds/linux-x64/), and a manifest whose
// exports name the bundle and its declarations. In this repository the packages stay their sources
// (their package.json is private), which tsx and vitest run as they are.
// Usage: node scripts/pack-package.mjs <cuda|llama> <outDir>   builds <outDir>/<name>/, packs it into
// <outDir> and prints the tarball's path (test/api/packaging.test.ts installs it in a consumer project).
import { build } from 'tsup';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
// Per package: its folder, its bundle's entries (a worker is an entry of its own: it is loaded by
// URL beside the module that starts it), and files it ships beside them ([from, to] under the package).
const PACKAGES = {
  cuda: { dir: 'packages/shadowkv-cuda', entries: { index: 'src/index.ts' }, files: [['runtime/cuda/build/Release/shadowkv_cuda.node', 'prebuilds/linux-x64/shadowkv_cuda.node']], os: ['linux'], cpu: ['x64'] },
  llama: { dir: 'packages/llama', entries: { index: 'src/index.ts', matmulWorker: 'src/model/matmulWorker.ts' }, files: [] },
};
const args = process.argv.slice(2);
const [which, out] = args;
const spec = PACKAGES[which];
const problem = args.length !== 2 ? `takes two arguments, got ${args.length}` : !spec ? `unknown package '${which}' (${Object.keys(PACKAGES).join(' or ')})` : undefined;
if (problem) {
  console.error(`scripts/pack-package.mjs: ${problem}\nusage: node scripts/pack-package.mjs <${Object.keys(PACKAGES).join('|')}> <outDir>`);
  process.exit(2);
}
const sdk = join(root, 'packages/shadowkv/src/');
const source = JSON.parse(readFileSync(join(root, spec.dir, 'package.json'), 'utf8'));
const sdkVersion = JSON.parse(readFileSync(join(root, 'packages/shadowkv/package.json'), 'utf8')).version;
const pkg = join(resolve(out), source.name);
rmSync(pkg, { recursive: true, force: true });
mkdirSync(join(pkg, 'dist'), { recursive: true });

await build({
  entry: Object.fromEntries(Object.entries(spec.entries).map(([name, file]) => [name, join(root, spec.dir, file)])),
  outDir: join(pkg, 'dist'),
  format: ['esm'],
  platform: 'node',
  target: 'node20',
  sourcemap: true,
  dts: false,
  silent: true,
  config: false,
  tsconfig: join(root, spec.dir, 'tsconfig.json'),
  esbuildPlugins: [{
    name: 'the SDK as a peer',
    setup(b) {
      b.onResolve({ filter: /shadowkv\/src\// }, (args) => (resolve(args.resolveDir, args.path).startsWith(sdk) ? { path: 'shadowkv/backend', external: true } : undefined));
    },
  }],
});

// Its declarations (the entry's; a worker has none), with the SDK's types imported as the bundle imports its code.
await build({
  entry: { index: join(root, spec.dir, spec.entries.index) },
  outDir: join(pkg, 'dist'),
  format: ['esm'],
  dts: { only: true },
  silent: true,
  config: false,
  tsconfig: join(root, spec.dir, 'tsconfig.json'),
  external: [/shadowkv\/src\//],
});
const types = join(pkg, 'dist/index.d.ts');
writeFileSync(types, readFileSync(types, 'utf8').replace(/(['"])(?:\.\.\/)+shadowkv\/src\/[^'"]*\1/g, "'shadowkv/backend'"));

const shipped = [];
for (const [from, to] of spec.files) {
  if (!existsSync(join(root, from))) {
    console.error(`pack-package: ${from} is not built here (no nvcc?): the package carries no ${to}, and says so when loaded`);
    continue;
  }
  mkdirSync(dirname(join(pkg, to)), { recursive: true });
  copyFileSync(join(root, from), join(pkg, to));
  shipped.push(to.split('/')[0]);
}
copyFileSync(join(root, spec.dir, 'README.md'), join(pkg, 'README.md'));
copyFileSync(join(root, 'LICENSE'), join(pkg, 'LICENSE'));
const manifest = {
  name: source.name,
  version: source.version,
  description: source.description,
  license: source.license,
  type: 'module',
  main: './dist/index.js',
  types: './dist/index.d.ts',
  exports: { '.': { types: './dist/index.d.ts', default: './dist/index.js' } },
  files: ['dist', ...new Set(shipped)],
  engines: source.engines,
  ...(spec.os ? { os: spec.os, cpu: spec.cpu } : {}),
  peerDependencies: { shadowkv: sdkVersion },
};
writeFileSync(join(pkg, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
const [packed] = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', resolve(out)], { cwd: pkg, encoding: 'utf8' }));
console.log(join(resolve(out), packed.filename));
