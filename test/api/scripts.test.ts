// The entry points run as a user runs them, with bad arguments: each is refused in one line that
// names what is wrong, before any work, and nothing is written or overwritten. Sizes are tiny, and
// the shell scripts run with the tools they would start (emcc, npm, npx, nvcc, ...) replaced by stubs
// that log their calls, so "before any work" is checked as "no tool was called".
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const made: string[] = [];
const scratch = (name: string) => made[made.push(mkdtempSync(join(tmpdir(), `skv-scripts-${name}-`))) - 1]!;
afterAll(() => made.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

interface Ran { status: number | null; out: string; err: string }
function spawn(command: string, args: string[], env: Record<string, string> = {}, cwd = ROOT): Ran {
  const r = spawnSync(command, args, { cwd, encoding: 'utf8', timeout: 90_000, env: { ...process.env, ...env } });
  return { status: r.status, out: r.stdout, err: r.stderr };
}
/** A TypeScript entry point under node + tsx, as `npx tsx <file>` runs it. */
const tsx = (file: string, args: string[], env: Record<string, string> = {}) => spawn(process.execPath, ['--import', 'tsx', file, ...args], env);

describe('bench/eval/main.ts: every flag checked before the model loads', () => {
  it('a nonsensical value, an unknown task or policy, a bad variant: one line naming the flag, exit 2, nothing written', () => {
    const out = join(scratch('eval-bad'), 'e');
    const tiny = ['--out', out, '--lengths', '128', '--samples', '1', '--tasks', 'passkey', '--policies', 'full'];
    const cases: [string[], RegExp][] = [
      [['--samples', '0'], /^eval: --samples takes an integer in \[1, 100000\], got '0'/],
      [['--chunk', '0'], /^eval: --chunk takes an integer/],
      [['--lengths', '10'], /^eval: --lengths takes integers in \[128, /],
      [['--tasks', 'passkey,bogus'], /^eval: --tasks takes some of passkey, .*got 'passkey,bogus'/],
      [['--policies', 'full,dense'], /^eval: --policies takes some of full, shadowkv/],
      [['--budgets', '0'], /^eval: --budgets takes numbers in \[0.0001, 1\]/],
      [['--minutes', 'soon'], /^eval: --minutes takes a number/],
      [['--variant', 'shadowkv:chunkSize'], /^eval: --variant 'shadowkv:chunkSize': 'chunkSize' is not option=number/],
    ];
    for (const [bad, message] of cases) {
      const r = tsx('bench/eval/main.ts', [...tiny, ...bad]);
      expect(r.status, bad.join(' ')).toBe(2);
      expect(r.err, bad.join(' ')).toMatch(message);
    }
    expect(existsSync(`${out}.json`) || existsSync(`${out}.partial.jsonl`)).toBe(false);
  });

  it('a --resume file that does not exist is refused, naming it, and the partial file of the run is left as it was', () => {
    const dir = scratch('eval-resume');
    const partial = join(dir, 'e.partial.jsonl');
    const progress = '{"task":"passkey","length":128,"index":0,"answers":[]}\n';
    writeFileSync(partial, progress);
    const missing = join(dir, 'typo.partial.jsonl');
    const r = tsx('bench/eval/main.ts', ['--out', join(dir, 'e'), '--resume', missing, '--lengths', '128', '--samples', '1', '--tasks', 'passkey', '--policies', 'full']);
    expect(r.status).toBe(2);
    expect(r.err).toContain(`eval: --resume ${missing}: no such file`);
    expect(readFileSync(partial, 'utf8')).toBe(progress);
    expect(existsSync(join(dir, 'e.json'))).toBe(false);
  });

  it('an --out whose .partial.jsonl exists is refused without --resume of it, naming the file and the flags, the file as it was', () => {
    const dir = scratch('eval-rerun');
    const partial = join(dir, 'e.partial.jsonl');
    const progress = '{"task":"passkey","length":128,"index":0,"answers":[]}\n';
    writeFileSync(partial, progress);
    const r = tsx('bench/eval/main.ts', ['--out', join(dir, 'e'), '--lengths', '128', '--samples', '1', '--tasks', 'passkey', '--policies', 'full']);
    expect(r.status).toBe(2);
    expect(r.err).toContain(`eval: --out ${join(dir, 'e')}: ${partial} holds the prompts of an earlier run; --resume ${partial} goes on from them, another --out keeps them`);
    expect(readFileSync(partial, 'utf8')).toBe(progress);
    expect(existsSync(join(dir, 'e.json'))).toBe(false);
  });

  it("a length past the model's maxPositions is refused, naming the limit, before any prompt runs", () => {
    const out = join(scratch('eval-long'), 'e');
    const r = tsx('bench/eval/main.ts', ['--out', out, '--lengths', '70000', '--samples', '1', '--tasks', 'passkey', '--policies', 'full']);
    expect(r.status).toBe(2);
    expect(r.err).toMatch(/eval: --lengths 70000 are past the model's maxPositions 65536/);
    expect(existsSync(`${out}.json`)).toBe(false);
  });
});

describe('a trial run does not overwrite the committed results in bench/results/', () => {
  const committed = (file: string) => readFileSync(join(ROOT, 'bench/results', file));

  it('eval: a smaller grid without --out writes the temp dir', () => {
    const before = committed('eval-random.json');
    const tmp = scratch('eval-trial');
    const r = tsx('bench/eval/main.ts', ['--lengths', '128', '--samples', '1', '--tasks', 'passkey', '--policies', 'full'], { TMPDIR: tmp });
    expect(r.status, r.err).toBe(0);
    expect(r.err).toMatch(/eval: a trial run \(--lengths, --tasks, --samples, --policies\): writing .*eval-random, not the committed bench\/results\/eval-random/);
    expect(JSON.parse(readFileSync(join(tmp, 'shadowkv', 'eval-random.json'), 'utf8')).answers).toHaveLength(1);
    expect(committed('eval-random.json').equals(before)).toBe(true);
  });

  it('soak: --steps and --cycles below the documented run write the temp dir; the old environment variables are refused', () => {
    const before = committed('soak.json');
    const tmp = scratch('soak-trial');
    const r = tsx('bench/soak.ts', ['--steps', '3', '--cycles', '2'], { TMPDIR: tmp });
    expect(r.status, r.err).toBe(0);
    expect(JSON.parse(readFileSync(join(tmp, 'shadowkv', 'soak.json'), 'utf8')).decode.steps).toBe(3);
    const env = tsx('bench/soak.ts', [], { SOAK_STEPS: '100', TMPDIR: tmp });
    expect(env.status).toBe(2);
    expect(env.err).toMatch(/^soak: SOAK_STEPS is no longer read: pass --steps instead/);
    expect(committed('soak.json').equals(before)).toBe(true);
  });
});

describe('the benchmarks take their flags through examples/cli.ts', () => {
  it('an unknown flag, a bad number or a missing argument: one line naming it, exit 2, before any work', () => {
    const out = join(scratch('bench-flags'), 'out.json');
    const cases: [string, string[], RegExp][] = [
      ['bench/causalAttention.ts', ['--bogus'], /^bench\/causalAttention: Unknown option '--bogus'/],
      ['bench/threads.ts', ['--tokens', 'abc'], /^bench\/threads: --tokens takes an integer/],
      ['bench/hotModel.ts', ['--sizes', '0,x', '--out', out], /^bench\/hotModel: --sizes takes integers/],
      ['bench/eval/recall.ts', ['--set', 'chunkSize=x'], /^bench\/eval\/recall: --set chunkSize=x: 'chunkSize=x' is not option=number/],
      ['bench/parity.ts', [out, '--backends', 'wasm'], /^bench\/parity: --backends takes two names/],
      ['bench/decodeOnly.ts', [], /^bench\/decodeOnly: <out> is missing/],
      ['bench/soak.ts', ['--steps', '0', '--out', out], /^soak: --steps takes an integer in \[1, /],
      ['bench/cpu.ts', ['--quick'], /^bench\/cpu: Unknown option '--quick'/],
      ['bench/gpu/run.ts', ['--steps', '0', '--out', out], /^bench\/gpu\/run: --steps takes an integer in \[1, /],
      ['bench/gpu/run.ts', ['--batches', '1,most', '--out', out], /^bench\/gpu\/run: --batches takes integers in \[1, \d+\] or max/],
      ['bench/gpu/host.ts', ['--steps', 'abc'], /^bench\/gpu\/host: --steps takes an integer/],
      ['bench/gpu/profile.ts', ['--pipeline', '1q'], /^bench\/gpu\/profile: --pipeline: bad setting '1q'/],
      ['bench/gpu/plot.ts', [], /^bench\/gpu\/plot: <json> is missing/],
    ];
    for (const [file, args, message] of cases) {
      const r = tsx(file, args);
      expect(r.status, `${file} ${args.join(' ')}: ${r.err}`).toBe(2);
      expect(r.err, `${file} ${args.join(' ')}`).toMatch(message);
    }
    expect(existsSync(out)).toBe(false);
  });
});

/** A folder of stub tools that log each call to its `calls` file, first on PATH: what a script started. */
function stubTools(): { env: Record<string, string>; calls: () => string } {
  const dir = scratch('stubs');
  const log = join(dir, 'calls');
  writeFileSync(log, '');
  // NOTE: the file tools too, so that a script that no longer refuses cannot replace or remove anything.
  for (const tool of ['emcc', 'npm', 'npx', 'node', 'apt-get', 'sudo', 'g++', 'nvcc', 'cmake', 'chromium', 'xz', 'nvidia-smi', 'python3', 'ncu', 'timeout', 'git', 'tar', 'mv', 'cp', 'rm', 'ln']) {
    writeFileSync(join(dir, tool), `#!/bin/sh\necho "${tool} $*" >> '${log}'\n`);
    chmodSync(join(dir, tool), 0o755);
  }
  return { env: { PATH: `${dir}:${process.env.PATH}` }, calls: () => readFileSync(log, 'utf8') };
}

describe('shell scripts refuse what they do not take, before any work', () => {
  it('bench/cpu.sh, runtime/wasm/build.sh, scripts/setup.sh and the other build and check scripts: unknown arguments, with a usage line', () => {
    const cases: [string, string[], RegExp][] = [
      ['bench/cpu.sh', ['--quick'], /^bench\/cpu\.sh: takes no arguments, got '--quick'\nusage: bash bench\/cpu\.sh/],
      ['runtime/wasm/build.sh', ['--devv'], /^runtime\/wasm\/build\.sh: unknown argument '--devv'\nusage: bash runtime\/wasm\/build\.sh \[--dev \| --sources\]/],
      ['runtime/wasm/build.sh', ['--dev', 'extra'], /^runtime\/wasm\/build\.sh: takes one argument at most/],
      ['scripts/setup.sh', ['--browsr'], /^scripts\/setup\.sh: unknown argument '--browsr'\nusage: bash scripts\/setup\.sh \[--browser\]/],
      ['scripts/test.sh', ['-t', 'cuda'], /^scripts\/test\.sh: takes no arguments/],
      ['scripts/browser-check.sh', ['x'], /^scripts\/browser-check\.sh: takes no arguments/],
      ['scripts/build-cuda.sh', ['two'], /^scripts\/build-cuda\.sh: jobs must be a whole number, got 'two'/],
      ['bench/native/build.sh', ['x'], /^bench\/native\/build\.sh: takes no arguments/],
      ['bench/gpu/kernels/build.sh', ['x'], /^bench\/gpu\/kernels\/build\.sh: takes no arguments/],
      ['scripts/gpu/variants.sh', ['--ncu'], /^scripts\/gpu\/variants\.sh: unknown arguments '--ncu'/],
      ['scripts/gpu/build-ref.sh', [], /^scripts\/gpu\/build-ref\.sh: REF is missing/],
      ['scripts/gpu/op-trace.sh', ['half'], /^scripts\/gpu\/op-trace\.sh: seconds must be a whole number, got 'half'\nusage: bash scripts\/gpu\/op-trace\.sh/],
      ['scripts/gpu/op-trace.sh', ['30', 'f64'], /^scripts\/gpu\/op-trace\.sh: dtype must be f32, f16 or bf16, got 'f64'/],
    ];
    for (const [script, args, message] of cases) {
      const tools = stubTools();
      const r = spawn('bash', [script, ...args], tools.env);
      expect(r.status, `${script} ${args.join(' ')}`).toBe(2);
      expect(r.err, `${script} ${args.join(' ')}`).toMatch(message);
      expect(tools.calls(), `${script} ${args.join(' ')} started tools`).toBe('');
    }
    // The documented ones still work: the native bench's source list comes from the wasm build.
    expect(spawn('bash', ['runtime/wasm/build.sh', '--sources']).out).toContain('runtime/wasm/memory.cc');
  });

  it('scripts/pack-package.mjs: an unknown package or a missing folder, with a usage line, before any build', () => {
    for (const [args, message] of [
      [['shadowkv', '/tmp/x'], /^scripts\/pack-package\.mjs: unknown package 'shadowkv' \(cuda or llama\)\nusage: node scripts\/pack-package\.mjs <cuda\|llama> <outDir>/],
      [['cuda'], /^scripts\/pack-package\.mjs: takes two arguments, got 1\nusage: /],
    ] as const) {
      const r = spawn(process.execPath, ['scripts/pack-package.mjs', ...args]);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.err, args.join(' ')).toMatch(message);
    }
  });

  it('scripts/gpu/*.sh: a flag without its value names the flag (not `$2: unbound variable`)', () => {
    const cases: [string, string[], RegExp][] = [
      ['scripts/gpu/ab.sh', ['--rounds'], /^scripts\/gpu\/ab\.sh: --rounds needs a value\nusage: /],
      ['scripts/gpu/ab.sh', ['--addons', '--run'], /^scripts\/gpu\/ab\.sh: --addons needs a value/],
      ['scripts/gpu/ab.sh', ['--rounds', 'two'], /^scripts\/gpu\/ab\.sh: --rounds takes a whole number, got 'two'/],
      ['scripts/gpu/kernels.sh', ['--batch', '4', '--context'], /^scripts\/gpu\/kernels\.sh: --context needs a value/],
      ['scripts/gpu/kernels.sh', ['--variant'], /^scripts\/gpu\/kernels\.sh: --variant needs a value/],
      ['scripts/gpu/host-profile.sh', ['--steps'], /^scripts\/gpu\/host-profile\.sh: --steps needs a value/],
      ['scripts/gpu/pack.sh', ['--also'], /^scripts\/gpu\/pack\.sh: --also needs a value\nusage: /],
    ];
    for (const [script, args, message] of cases) {
      const tools = stubTools();
      const r = spawn('bash', [script, ...args], tools.env);
      expect(r.status, `${script} ${args.join(' ')}`).toBe(2);
      expect(r.err, `${script} ${args.join(' ')}`).toMatch(message);
      expect(r.err).not.toMatch(/unbound variable/);
      expect(tools.calls(), `${script} ${args.join(' ')} started tools`).toBe('');
    }
  });
});

describe('the demo', () => {
  it("demo: a haystack and answer past the model's maxPositions are refused up front, naming the limit", () => {
    const r = tsx('examples/demo.ts', ['--tokens', '65536', '--new', '64', '--backend', 'wasm']);
    expect(r.status).toBe(2);
    expect(r.err).toMatch(/^demo: --tokens 65536 and --new 64 need \d+ positions, past the model's maxPositions 65536 \(max_position_embeddings in models\/skv-small\/config\.json\): use at most --tokens 65472/);
    expect(r.out).toBe('');
  });

  it("demo: decoding shows progress per policy, as the prefill does", () => {
    const r = tsx('examples/demo.ts', ['--tokens', '256', '--new', '8', '--task', 'passkey', '--backend', 'wasm']);
    expect(r.status, r.err).toBe(0);
    expect(r.err).toMatch(/^full decode \[#+\] 7\/7/m);
    expect(r.err).toMatch(/^shadowkv decode \[#+\] 7\/7/m);
  });

  it('scripts/demo.sh checks the demo\'s flags with the npm dependencies only, before the full setup builds wasm', () => {
    // A copy of the tree whose scripts/setup.sh only logs how it was called.
    const tree = scratch('demo-sh');
    mkdirSync(join(tree, 'scripts'));
    for (const f of ['demo.sh', 'args.sh']) writeFileSync(join(tree, 'scripts', f), readFileSync(join(ROOT, 'scripts', f)));
    writeFileSync(join(tree, 'scripts', 'setup.sh'), `echo "setup $*" >> '${join(tree, 'setup.log')}'\n`);
    for (const f of ['examples', 'bench', 'packages', 'models', 'node_modules', 'package.json', 'tsconfig.json']) symlinkSync(join(ROOT, f), join(tree, f));
    const setupCalls = () => (existsSync(join(tree, 'setup.log')) ? readFileSync(join(tree, 'setup.log'), 'utf8') : '');
    const bad = spawn('bash', [join(tree, 'scripts', 'demo.sh'), '--tokens', 'abc']);
    expect(bad.status).toBe(2);
    expect(bad.err).toMatch(/demo: --tokens takes an integer in \[256, \d+\], got 'abc'/);
    expect(setupCalls()).toBe('setup --npm\n');
    const long = spawn('bash', [join(tree, 'scripts', 'demo.sh'), '--tokens', '65536', '--new', '64']);
    expect(long.status).toBe(2);
    expect(long.err).toMatch(/past the model's maxPositions 65536/);
    expect(setupCalls()).toBe('setup --npm\nsetup --npm\n');
  });
});

describe('examples/llama', () => {
  it('examples/llama: the temporary checkpoint is removed after a run, and never written when the flags or the backend are refused', () => {
    const tiny = ['--tokens', '64', '--new', '3', '--layers', '1', '--hidden', '16', '--heads', '2', '--kv-heads', '1', '--head-dim', '8', '--intermediate', '16'];
    const checkpoints = (dir: string) => readdirSync(dir).filter((f) => f.startsWith('shadowkv-llama-'));
    const tmp = scratch('llama');
    const ok = tsx('examples/llama.ts', [...tiny, '--backend', 'wasm'], { TMPDIR: tmp });
    expect(ok.status, ok.err).toBe(0);
    expect(checkpoints(tmp)).toEqual([]);
    expect(ok.out).toMatch(/model: random, written to and loaded from .*shadowkv-llama-.* \(removed\)/);
    const backend = tsx('examples/llama.ts', [...tiny, '--backend', 'tpu'], { TMPDIR: tmp });
    const heads = tsx('examples/llama.ts', [...tiny, '--heads', '8', '--kv-heads', '3'], { TMPDIR: tmp });
    expect(checkpoints(tmp)).toEqual([]);
    expect(backend.status).toBe(1);
    expect(backend.err).toMatch(/^examples\/llama: unknown backend 'tpu'/);
    expect(heads.status).toBe(2);
    expect(heads.err).toMatch(/^examples\/llama: --kv-heads 3 must divide --heads 8/);
  });
});
