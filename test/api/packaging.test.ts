// The shadowkv package as a user gets it from npm: built and packed into a scratch folder, the
// tarball unpacked into a consumer's node_modules, then imported by Node (ESM and CommonJS), type-checked
// by tsc under each module resolution a consumer may use, and bundled for the browser by esbuild.
// Nothing here reads the repository's sources at run time, so a file the tarball lacks shows up.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PKG = join(ROOT, 'packages/shadowkv');
const BIN = join(ROOT, 'node_modules/.bin');

function run(command: string, args: string[], cwd: string): string {
  const r = spawnSync(command, args, { cwd, encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

interface Manifest {
  main?: string;
  types?: string;
  exports: Record<string, string | Record<string, string>>;
  files?: string[];
  engines?: Record<string, string>;
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

let scratch: string;
let consumer: string; // a project with the tarball unpacked as node_modules/shadowkv
let installed: string;
let packed: string[]; // the tarball's paths, as `npm pack` lists them
let manifest: Manifest;

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'skv-packaging-'));
  // The package folder as it is, less what the build writes, built as `npm run build` builds it.
  const pkg = join(scratch, 'pkg');
  cpSync(PKG, pkg, { recursive: true, filter: (from) => !/[\\/](dist|node_modules)$/.test(from) });
  run(join(BIN, 'tsup'), ['--out-dir', join(pkg, 'dist')], ROOT);
  run(process.execPath, [join(ROOT, 'scripts/copy-wasm.mjs'), join(pkg, 'dist')], ROOT);
  const [pack] = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', scratch], pkg)) as { filename: string; files: { path: string }[] }[];
  packed = pack!.files.map((f) => f.path);
  consumer = join(scratch, 'consumer');
  installed = join(consumer, 'node_modules/shadowkv');
  mkdirSync(installed, { recursive: true });
  run('tar', ['-xzf', join(scratch, pack!.filename), '-C', installed, '--strip-components=1'], scratch);
  manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as Manifest;
  // What npm would install beside it: its dependency, and the consumer's own tools' types.
  mkdirSync(join(consumer, 'node_modules/@types'), { recursive: true });
  symlinkSync(join(ROOT, 'node_modules/msgpackr'), join(consumer, 'node_modules/msgpackr'));
  symlinkSync(join(ROOT, 'node_modules/@types/node'), join(consumer, 'node_modules/@types/node'));
  writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
}, 180_000);
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** The consumer's files through tsc, strict and without skipLibCheck, under each setup: an error is a failed expectation naming the setup. */
function typeCheck(setups: { module: string; moduleResolution: string; lib: string[]; types: string[]; files: string[] }[]): void {
  for (const { files, ...setup } of setups) {
    const compilerOptions = { target: 'es2022', strict: true, skipLibCheck: false, noEmit: true, ...setup };
    writeFileSync(join(consumer, 'tsconfig.json'), JSON.stringify({ compilerOptions, files }));
    const r = spawnSync(join(BIN, 'tsc'), ['-p', '.'], { cwd: consumer, encoding: 'utf8', timeout: 120_000 });
    expect(r.status, `${JSON.stringify(setup)}\n${r.stdout}${r.stderr}`).toBe(0);
  }
}

/** Every file an `exports` entry, `main` or `types` names (wildcards as their folder). */
function exportTargets(m: Manifest): string[] {
  const targets = Object.values(m.exports).flatMap((t) => (typeof t === 'string' ? [t] : Object.values(t)));
  return [...targets, m.main!, m.types!].map((t) => t.replace(/^\.\//, '').replace(/\/\*$/, ''));
}

/** The package names a built file imports: static imports and exports, and import() of a string literal. */
function importedPackages(js: string): string[] {
  const specifiers = [...js.matchAll(/(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*["']([^"']+)["']|import\s*\(\s*["']([^"']+)["']\s*\)|^import\s*["']([^"']+)["']/gm)].map(
    (m) => m[1] ?? m[2] ?? m[3]!,
  );
  return [...new Set(specifiers.filter((s) => !s.startsWith('.')).map((s) => s.split('/').slice(0, s.startsWith('@') ? 2 : 1).join('/')))];
}

describe('the shadowkv tarball', () => {
  it('ships the bundle, its declarations, both wasm binaries, README and LICENSE, and no sources or tests', () => {
    expect(readFileSync(join(installed, 'LICENSE'), 'utf8')).toBe(readFileSync(join(ROOT, 'LICENSE'), 'utf8'));
    for (const f of ['package.json', 'README.md', 'LICENSE', 'dist/index.js', 'dist/backend.js', 'dist/testing.js', 'dist/index.d.ts', 'dist/wasm/shadowkv-simd.wasm', 'dist/wasm/shadowkv.wasm']) {
      expect(packed, f).toContain(f);
    }
    expect(packed.filter((f) => /(^|\/)(src|test)\/|\.test\.|\.spec\.|tsconfig/.test(f))).toEqual([]);
  });

  it('every exports, main and types target is in the tarball', () => {
    for (const target of exportTargets(manifest)) expect(packed.some((f) => f === target || f.startsWith(`${target}/`)), target).toBe(true);
    expect(manifest.engines?.node).toMatch(/^>=\d+/);
  });

  it('every source map carries the text of the sources it names (they are not in the tarball)', () => {
    for (const file of packed.filter((f) => f.endsWith('.map'))) {
      const map = JSON.parse(readFileSync(join(installed, file), 'utf8')) as { sources: string[]; sourcesContent?: (string | null)[] };
      map.sources.forEach((source, i) => expect(typeof map.sourcesContent?.[i], `${file}: ${source}`).toBe('string'));
    }
  });

  it('every package a built file imports is a declared dependency, or an optional peer for the subpath that needs it', () => {
    const declared = new Set([...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.peerDependencies ?? {})]);
    const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
    for (const file of packed.filter((f) => f.endsWith('.js'))) {
      for (const name of importedPackages(readFileSync(join(installed, file), 'utf8'))) {
        if (!builtins.has(name)) expect(declared.has(name), `${file} imports '${name}', which package.json does not declare`).toBe(true);
      }
    }
    // Only shadowkv/testing imports vitest: a peer a user of the conformance kit has, not a dependency of every install.
    expect(manifest.peerDependenciesMeta?.vitest?.optional).toBe(true);
  });
});

describe('a consumer of the installed package', () => {
  it('imports every entry point under Node and decodes on the wasm runtime the package carries', () => {
    const script = `
      import { ready, ShadowKVCache } from 'shadowkv';
      import { registerPolicy } from 'shadowkv/backend';
      const info = await ready();
      const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 64, rope: { theta: 10000 } };
      const cache = new ShadowKVCache({ spec, maxTokens: 64, budget: 16 });
      const t = (shape) => ({ data: new Float32Array(shape.reduce((a, b) => a * b)).fill(0.25), shape, dtype: 'f32' });
      cache.prefill(0, { keys: t([1, 2, 8, 64]), values: t([1, 2, 8, 64]) });
      const out = cache.decode(0, { query: t([1, 4, 1, 64]), key: t([1, 2, 1, 64]), value: t([1, 2, 1, 64]) });
      console.log(info.name, typeof registerPolicy, out.shape.join('x'), out.data[0]);`;
    writeFileSync(join(consumer, 'e2e.mjs'), script);
    expect(run(process.execPath, ['e2e.mjs'], consumer).trim()).toBe('wasm function 1x4x1x64 0.25');
  });

  it("require('shadowkv') from CommonJS loads the ESM bundle (Node 20.19+), or says it is ESM (ERR_REQUIRE_ESM)", () => {
    const script = `try { console.log(typeof require('shadowkv').createCache); } catch (e) { console.log(e.code); }`;
    writeFileSync(join(consumer, 'cjs.cjs'), script);
    expect(['function', 'ERR_REQUIRE_ESM']).toContain(run(process.execPath, ['cjs.cjs'], consumer).trim());
  });

  it('type-checks, strict and without skipLibCheck, under node16, nodenext and bundler resolution, with the libs docs/guide.md names', () => {
    // A Node project (lib es2022, @types/node, no lib dom: @types/node 20 declares no WebAssembly) using
    // the model-loop entry, the kit and the backend entry; a browser project has no @types/node, and
    // its WebAssembly.Module goes in and out of the backend entry's wasm functions.
    writeFileSync(
      join(consumer, 'loop.ts'),
      `import { ready, ShadowKVCache, LLAMA3_8B, ConfigError, type ModelSpec } from 'shadowkv';
       import { runPolicyConformance } from 'shadowkv/testing';
       const spec: ModelSpec = LLAMA3_8B;
       await ready();
       using cache = new ShadowKVCache({ spec, maxTokens: 1024, budget: 64 });
       export const used = [cache, ConfigError, runPolicyConformance];`,
    );
    writeFileSync(join(consumer, 'plugin.ts'), `import { registerPolicy, compileWasm, type Device } from 'shadowkv/backend';
export const used = [registerPolicy, compileWasm];
export type D = Device;
`);
    writeFileSync(
      join(consumer, 'browserWasm.ts'),
      `import { compileWasm, instantiateWasm } from 'shadowkv/backend';
       const compiled: WebAssembly.Module = await compileWasm();
       export const exports = [instantiateWasm(compiled), instantiateWasm(await WebAssembly.compile(new Uint8Array(8)))];`,
    );
    typeCheck([
      { module: 'node16', moduleResolution: 'node16', lib: ['es2022'], types: ['node'], files: ['loop.ts', 'plugin.ts'] },
      { module: 'nodenext', moduleResolution: 'nodenext', lib: ['es2022'], types: ['node'], files: ['loop.ts', 'plugin.ts'] },
      { module: 'esnext', moduleResolution: 'bundler', lib: ['es2022', 'esnext.disposable', 'dom'], types: [], files: ['loop.ts', 'plugin.ts', 'browserWasm.ts'] },
    ]);
  });

  it("docs/plugins.md's PolicyTypes augmentation type-checks in a plugin project that imports only shadowkv/backend", () => {
    // A module augmentation needs its module resolved in the program: a plugin package imports only
    // shadowkv/backend, where the doc's block, without a type import of 'shadowkv', failed with TS2664.
    const doc = readFileSync(join(ROOT, 'docs/plugins.md'), 'utf8');
    const block = [...doc.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!).find((code) => code.includes("declare module 'shadowkv'"));
    expect(block).toBeDefined();
    writeFileSync(join(consumer, 'augment.ts'), block!);
    writeFileSync(
      join(consumer, 'LandmarkWindowCache.ts'),
      `import type { Device } from 'shadowkv/backend';
       export class LandmarkWindowCache { constructor(readonly device?: Device) {} }
       export interface LandmarkWindowOptions { window: number }`,
    );
    typeCheck([
      { module: 'nodenext', moduleResolution: 'nodenext', lib: ['es2022'], types: ['node'], files: ['LandmarkWindowCache.ts', 'augment.ts'] },
      { module: 'esnext', moduleResolution: 'bundler', lib: ['es2022', 'esnext.disposable', 'dom'], types: [], files: ['LandmarkWindowCache.ts', 'augment.ts'] },
    ]);
  });

  it('bundles for the browser with esbuild, no flags, and the bundle imports no Node built-in', () => {
    writeFileSync(join(consumer, 'browser.js'), `import { ready, createCache } from 'shadowkv';\nawait ready();\nexport { createCache };\n`);
    run(join(BIN, 'esbuild'), ['browser.js', '--bundle', '--format=esm', '--platform=browser', '--outfile=out/browser.js', '--log-level=error'], consumer);
    const bundle = readFileSync(join(consumer, 'out/browser.js'), 'utf8');
    expect(importedPackages(bundle)).toEqual([]);
    expect(readdirSync(join(installed, 'dist/wasm')).sort()).toEqual(['shadowkv-simd.wasm', 'shadowkv.wasm']);
  });
});

describe('the workspace packages as they are', () => {
  // shadowkv-llama and shadowkv-cuda run here from .ts sources that import shadowkv's by relative
  // path: packed from their folders they would install and fail at the first import, so those stay
  // private, and scripts/pack-package.mjs packs them (below).
  it.each(['packages/llama', 'packages/shadowkv-cuda'])('%s stays private while its sources import outside the package', (dir) => {
    const manifest = JSON.parse(readFileSync(join(ROOT, dir, 'package.json'), 'utf8')) as { private?: boolean };
    const src = join(ROOT, dir, 'src');
    const reachesOut = readdirSync(src, { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.ts'))
      .some((f) => /from '(\.\.\/)+shadowkv\/src\//.test(readFileSync(join(src, f), 'utf8')));
    expect(reachesOut && manifest.private !== true).toBe(false);
  });
});

describe('shadowkv-cuda and shadowkv-llama as npm installs them beside shadowkv (scripts/pack-package.mjs)', () => {
  const ADDON = join(ROOT, 'runtime/cuda/build/Release/shadowkv_cuda.node');
  const packages = { cuda: 'shadowkv-cuda', llama: 'shadowkv-llama' } as const;
  const tarballs: Record<string, { files: string[]; manifest: Manifest; dir: string }> = {};
  beforeAll(() => {
    for (const [which, name] of Object.entries(packages)) {
      const tarball = run(process.execPath, [join(ROOT, 'scripts/pack-package.mjs'), which, join(scratch, 'packed')], ROOT).trim().split('\n').at(-1)!;
      const dir = join(consumer, 'node_modules', name);
      mkdirSync(dir, { recursive: true });
      run('tar', ['-xzf', tarball, '-C', dir, '--strip-components=1'], scratch);
      const files = run('tar', ['-tzf', tarball], scratch).trim().split('\n').map((f) => f.replace(/^package\//, ''));
      tarballs[name] = { files, manifest: JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest, dir };
    }
  }, 240_000);

  it.each(Object.values(packages))('%s ships its bundle and declarations, README and LICENSE, no sources, and imports only Node and its peer shadowkv', (name) => {
    const { files, manifest, dir } = tarballs[name]!;
    const bundle = name === 'shadowkv-llama' ? ['dist/index.js', 'dist/index.d.ts', 'dist/matmulWorker.js'] : ['dist/index.js', 'dist/index.d.ts'];
    for (const f of ['package.json', 'README.md', 'LICENSE', ...bundle]) expect(files, f).toContain(f);
    expect(files.includes('prebuilds/linux-x64/shadowkv_cuda.node')).toBe(name === 'shadowkv-cuda' && existsSync(ADDON));
    expect(files.filter((f) => /(^|\/)(src|test)\/|(?<!\.d)\.ts$|tsconfig/.test(f))).toEqual([]);
    for (const target of exportTargets(manifest)) expect(files, target).toContain(target);
    const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
    for (const file of files.filter((f) => f.endsWith('.js'))) {
      const imported = importedPackages(readFileSync(join(dir, file), 'utf8')).filter((p) => !builtins.has(p));
      expect(imported.every((p) => p === 'shadowkv'), `${file} imports ${imported.join(', ')}`).toBe(true);
    }
    expect(Object.keys(manifest.peerDependencies ?? {})).toEqual(['shadowkv']);
    expect((manifest as { private?: boolean }).private).toBeUndefined();
  });

  it("their declarations type-check as the READMEs' and docs' examples use them, strict and without skipLibCheck, on the user's shadowkv types", () => {
    // A Node project needs no lib dom for them (nor for shadowkv/backend's, which theirs import): they name no WebAssembly type.
    writeFileSync(
      join(consumer, 'model.ts'),
      `import { ShadowKVCache, type ModelSpec } from 'shadowkv';
       import { registerBackend } from 'shadowkv/backend';
       import { createCudaBackend } from 'shadowkv-cuda';
       import { BpeTokenizer, LlamaModel, fitCacheOptions, generate, loadCheckpoint } from 'shadowkv-llama';
       registerBackend('cuda1', () => createCudaBackend({ device: 1 }), 3);
       const model = await LlamaModel.create(await loadCheckpoint('./my-llama'));
       const spec: ModelSpec = model.spec;
       const tokenizer = await BpeTokenizer.load('./my-llama/tokenizer.json');
       const prompt = [tokenizer.tokenId('<|begin_of_text|>')!, ...tokenizer.encode('a long text')];
       const fit = fitCacheOptions(spec, { promptTokens: prompt.length, maxNewTokens: 64 });
       const cache = new ShadowKVCache({ spec, maxTokens: fit.maxTokens, ...fit.options });
       for await (const t of generate(model, cache, prompt, { maxNewTokens: 64, tokenizer })) console.log(t.text!);`,
    );
    typeCheck([
      { module: 'node16', moduleResolution: 'node16', lib: ['es2022'], types: ['node'], files: ['model.ts'] },
      { module: 'nodenext', moduleResolution: 'nodenext', lib: ['es2022'], types: ['node'], files: ['model.ts'] },
      { module: 'esnext', moduleResolution: 'bundler', lib: ['es2022', 'esnext.disposable', 'dom'], types: [], files: ['model.ts'] },
    ]);
  });

  it("shadowkv-cuda is the user's backend: auto runs on it or says why not, and its errors are the user's shadowkv classes", () => {
    const script = `
      import { createCache, NoBinaryError, NoDeviceError } from 'shadowkv';
      const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 64, rope: { theta: 10000 } };
      const auto = await createCache({ spec, backend: 'auto' });
      let cuda;
      try {
        cuda = (await createCache({ spec, backend: 'cuda' })).backendInfo.name;
      } catch (e) {
        cuda = [e.constructor.name, e instanceof NoDeviceError || e instanceof NoBinaryError, e.message].join(' | ');
      }
      console.log(JSON.stringify({ auto: auto.backendInfo, cuda }));`;
    writeFileSync(join(consumer, 'cuda.mjs'), script);
    const got = JSON.parse(run(process.execPath, ['cuda.mjs'], consumer).trim()) as { auto: { name: string; reason: string }; cuda: string };
    if (got.cuda === 'cuda') {
      expect(got.auto.name).toBe('cuda'); // a GPU machine
      return;
    }
    // No GPU (or no addon built here): the packed backend was found and loaded, and said why.
    expect(got.auto.name).toBe('wasm');
    expect(got.auto.reason).toMatch(/^auto: cuda unavailable \(shadowkv-cuda: /);
    const [name, typed, message] = got.cuda.split(' | ');
    expect(typed, got.cuda).toBe('true');
    expect(name).toBe(existsSync(ADDON) ? 'NoDeviceError' : 'NoBinaryError');
    expect(message).toMatch(/^shadowkv-cuda: /);
  });

  it('shadowkv-llama runs the bundled model on the packed SDK, on one thread and on two (its worker is a file of the bundle)', () => {
    const script = `
      import { createCache } from 'shadowkv';
      import { LlamaModel, argmax } from 'shadowkv-llama';
      const ids = Array.from(new TextEncoder().encode('The passkey is 12345. Remember it. The passkey is'));
      const runs = [];
      for (const threads of [1, 2]) {
        const model = await LlamaModel.load(${JSON.stringify(join(ROOT, 'models/skv-small'))}, { threads });
        const cache = await createCache({ spec: model.spec, policy: 'full', maxTokens: 128 });
        const logits = model.prefill(ids, cache);
        runs.push({ matmul: model.matmul.name, top: argmax(logits), logits: Array.from(logits.subarray(0, 8)) });
        cache.dispose();
        model.dispose();
      }
      console.log(JSON.stringify(runs));`;
    writeFileSync(join(consumer, 'llama.mjs'), script);
    const [one, two] = JSON.parse(run(process.execPath, ['llama.mjs'], consumer).trim()) as { matmul: string; top: number; logits: number[] }[];
    expect(two!.matmul).toBe(`${one!.matmul}-x2`);
    expect(two!.top).toBe(one!.top);
    two!.logits.forEach((x, i) => expect(x).toBeCloseTo(one!.logits[i]!, 4));
  });
});
