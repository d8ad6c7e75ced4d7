// scripts/setup.sh rebuilds the wasm runtime only when a file it is built from is newer than its
// outputs, and never runs npm ci through a linked node_modules. Runs on a copy of the tree whose
// build.sh and emcc are stubs that log their calls.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const tree = mkdtempSync(join(tmpdir(), 'skv-setup-'));
afterAll(() => rmSync(tree, { recursive: true, force: true }));

it('scripts/setup.sh builds a fresh tree, skips an up-to-date one in one line, and rebuilds after a source or kernels header changes', () => {
  for (const dir of ['scripts', 'runtime/wasm', 'kernels', 'bin', 'linked']) mkdirSync(join(tree, dir), { recursive: true });
  for (const f of ['setup.sh', 'args.sh']) writeFileSync(join(tree, 'scripts', f), readFileSync(join(ROOT, 'scripts', f)));
  const log = join(tree, 'calls.log');
  writeFileSync(join(tree, 'runtime/wasm/build.sh'), `echo build >> '${log}'; mkdir -p runtime/wasm/out; touch runtime/wasm/out/shadowkv-simd.wasm runtime/wasm/out/shadowkv.wasm\n`);
  const SOURCES = ['runtime/wasm/gemm.cc', 'runtime/wasm/abi.h', 'runtime/wasm/build.sh', 'kernels/host_pool.h'];
  for (const f of SOURCES.filter((f) => !f.endsWith('build.sh'))) writeFileSync(join(tree, f), '// source\n');
  for (const tool of ['emcc', 'npm']) {
    writeFileSync(join(tree, 'bin', tool), `#!/bin/sh\necho "${tool} $*" >> '${log}'\n`);
    chmodSync(join(tree, 'bin', tool), 0o755);
  }
  symlinkSync(join(tree, 'linked'), join(tree, 'node_modules'));
  writeFileSync(join(tree, 'package-lock.json'), '{}');
  const setup = () => {
    const r = spawnSync('bash', [join(tree, 'scripts/setup.sh')], { cwd: tree, encoding: 'utf8', env: { ...process.env, PATH: `${join(tree, 'bin')}:${process.env.PATH}` } });
    expect(r.status, r.stderr).toBe(0);
    return r.stdout;
  };
  const builds = () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter((l) => l === 'build').length : 0);
  const at = (f: string, secondsFromNow: number) => utimesSync(join(tree, f), new Date(Date.now() + secondsFromNow * 1000), new Date(Date.now() + secondsFromNow * 1000));
  const OUT = ['runtime/wasm/out/shadowkv-simd.wasm', 'runtime/wasm/out/shadowkv.wasm'];
  /** `f` alone edited after the last build. */
  const change = (f: string) => (SOURCES.forEach((g) => at(g, -120)), OUT.forEach((o) => at(o, -60)), at(f, 0));

  const fresh = setup();
  expect(fresh).toContain('setup: building the wasm runtime from source (runtime/wasm/out/shadowkv-simd.wasm is missing)');
  expect(fresh).toContain(`setup: node_modules links to ${join(tree, 'linked')}: not reinstalled here`);
  expect(builds()).toBe(1);
  expect(readFileSync(log, 'utf8')).not.toMatch(/^npm/m);
  expect(setup()).toContain('setup: the wasm runtime is up to date (runtime/wasm/out is newer than every source it is built from); not rebuilt');
  expect(builds()).toBe(1);
  change('runtime/wasm/gemm.cc');
  expect(setup()).toContain('setup: building the wasm runtime from source (runtime/wasm/gemm.cc changed)');
  expect(builds()).toBe(2);
  change('runtime/wasm/gemm.cc');
  at(OUT[0]!, 60); // one output newer is not enough: the other is older than gemm.cc
  expect(setup()).toContain('(runtime/wasm/gemm.cc changed)');
  expect(builds()).toBe(3);
  expect(setup()).toContain('up to date');
  change('kernels/host_pool.h');
  expect(setup()).toContain('(kernels/host_pool.h changed)');
  expect(builds()).toBe(4);
});
