// The examples' and benchmarks' flags (examples/cli.ts): a bad value is one line naming the flag and
// what it takes, exit 2, before any work (`--tokens abc` once ran the demo out of heap after 45 s).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { resultsPath } from '../../bench/output.js';
import { cli, refuse, type Flag } from '../../examples/cli.js';

const spec = {
  tokens: { kind: 'int', default: 8192, min: 256, max: 65536, doc: 'haystack tokens' },
  budget: { kind: 'number', default: 0.5, min: 1e-4, max: 1, doc: 'share' },
  task: { kind: 'choice', default: 'a', of: ['a', 'b'], doc: 'task' },
  focus: { kind: 'number', min: 0, max: 64, doc: 'optional' },
  fast: { kind: 'switch', doc: 'a switch' },
} as const;

/** What cli() printed and the status it exited with, for argv (and a spec other than the one above). */
function run(argv: string[], with_: Record<string, Flag> = spec): { status?: number; err: string; out: string; value?: unknown } {
  let err = '', out = '';
  vi.spyOn(console, 'error').mockImplementation((m: unknown) => void (err += String(m)));
  vi.spyOn(console, 'log').mockImplementation((m: unknown) => void (out += String(m)));
  vi.spyOn(process, 'exit').mockImplementation(((code: number) => {
    throw Object.assign(new Error('exit'), { status: code });
  }) as never);
  try {
    return { value: cli('demo', 'a test', with_, argv), err, out };
  } catch (e) {
    return { status: (e as { status: number }).status, err, out };
  }
}

describe('examples/cli.ts', () => {
  afterEach(() => vi.restoreAllMocks());

  it('values of each kind, defaults and optional flags', () => {
    expect(run([]).value).toEqual({ tokens: 8192, budget: 0.5, task: 'a', focus: undefined, fast: false });
    expect(run(['--tokens', '512', '--budget=0.25', '--task', 'b', '--focus', '3.5', '--fast']).value).toEqual({ tokens: 512, budget: 0.25, task: 'b', focus: 3.5, fast: true });
  });

  it('a bad flag is one line that names it and what it takes, and exit 2', () => {
    const cases: [string[], RegExp][] = [
      [['--tokens', 'abc'], /^demo: --tokens takes an integer in \[256, 65536\], got 'abc'/],
      [['--tokens', '1e12'], /--tokens takes an integer/],
      [['--tokens', '300.5'], /--tokens takes an integer/],
      [['--tokens', ''], /--tokens takes an integer/],
      [['--budget', '0'], /--budget takes a number in \[0.0001, 1\], got '0'/],
      [['--task', 'c'], /--task takes one of a, b, got 'c'/],
      [['--bogus'], /Unknown option '--bogus'/],
      [['--tokens'], /argument missing/],
      [['--fast=yes'], /does not take an argument/],
      [['stray'], /positional/i],
    ];
    for (const [argv, message] of cases) {
      const r = run(argv);
      expect(r.status, argv.join(' ')).toBe(2);
      expect(r.err, argv.join(' ')).toMatch(message);
    }
  });

  it('--help lists every flag with what it takes and its default, and exits 0', () => {
    const r = run(['--help']);
    expect(r.status).toBe(0);
    expect(r.out).toMatch(/--tokens <an integer in \[256, 65536\]>  haystack tokens \(default 8192\)/);
    expect(r.out).toMatch(/--fast  a switch/);
  });
});

// The benchmarks' kinds: lists, repeatable strings and positional arguments.
const lists = {
  out: { kind: 'arg', doc: 'the JSON to write' },
  other: { kind: 'arg', optional: true, doc: 'another checkout' },
  lengths: { kind: 'ints', default: [1024, 2048], min: 128, max: 65536, doc: 'lengths' },
  batches: { kind: 'ints', default: [1, 'max'], min: 1, max: 64, words: ['max'], doc: 'rows' },
  budgets: { kind: 'numbers', min: 1e-4, max: 1, doc: 'shares' },
  tasks: { kind: 'choices', default: ['a', 'b'], of: ['a', 'b', 'c'], doc: 'tasks' },
  variant: { kind: 'strings', doc: 'repeatable' },
} as const;

describe('examples/cli.ts, the benchmarks\' kinds', () => {
  afterEach(() => vi.restoreAllMocks());

  it('lists, repeatable flags and positional arguments, with their defaults', () => {
    expect(run(['o.json'], lists).value).toEqual({ out: 'o.json', other: undefined, lengths: [1024, 2048], batches: [1, 'max'], budgets: undefined, tasks: ['a', 'b'], variant: [] });
    const given = ['o.json', 'ref', '--lengths', '128, 4096', '--batches', 'max,4', '--budgets', '0.5', '--tasks', 'c', '--variant', 'x:1', '--variant', 'y:2'];
    expect(run(given, lists).value).toEqual({ out: 'o.json', other: 'ref', lengths: [128, 4096], batches: ['max', 4], budgets: [0.5], tasks: ['c'], variant: ['x:1', 'y:2'] });
  });

  it('a bad list item, a name twice, a missing or extra argument: one line naming it, exit 2', () => {
    const cases: [string[], RegExp][] = [
      [['o.json', '--lengths', '128,abc'], /^demo: --lengths takes integers in \[128, 65536\], comma-separated, got '128,abc'/],
      [['o.json', '--lengths', '64'], /--lengths takes integers/],
      [['o.json', '--lengths', '128,,256'], /--lengths takes integers/],
      [['o.json', '--lengths', '128,128'], /--lengths lists 128 twice/],
      [['o.json', '--batches', '1,most'], /--batches takes integers in \[1, 64\] or max, comma-separated/],
      [['o.json', '--budgets', '0'], /--budgets takes numbers in \[0.0001, 1\]/],
      [['o.json', '--tasks', 'a,d'], /--tasks takes some of a, b, c, comma-separated, got 'a,d'/],
      [['o.json', '--tasks', 'a,a'], /--tasks lists a twice/],
      [['o.json', '--variant'], /argument missing/],
      [[], /<out> is missing \(the JSON to write\)/],
      [['o.json', 'ref', 'third'], /unexpected argument 'third'/],
    ];
    for (const [argv, message] of cases) {
      const r = run(argv, lists);
      expect(r.status, argv.join(' ')).toBe(2);
      expect(r.err, argv.join(' ')).toMatch(message);
    }
  });

  it('--help names the positional arguments and every list flag with what it takes', () => {
    const r = run(['--help'], lists);
    expect(r.status).toBe(0);
    expect(r.out).toMatch(/^demo <out> \[<other>\] \[flags\]: a test/);
    expect(r.out).toMatch(/--lengths <integers in \[128, 65536\], comma-separated>  lengths \(default 1024,2048\)/);
    expect(r.out).toMatch(/--variant <a string, repeatable>  repeatable/);
  });

  it('refuse(): a check across flags ends the same way, one line and exit 2', () => {
    let err = '';
    vi.spyOn(console, 'error').mockImplementation((m: unknown) => void (err += String(m)));
    vi.spyOn(process, 'exit').mockImplementation(((code: number) => {
      throw Object.assign(new Error('exit'), { status: code });
    }) as never);
    expect(() => refuse('eval', '--resume x.partial.jsonl: no such file')).toThrow(expect.objectContaining({ status: 2 }));
    expect(err).toMatch(/^eval: --resume x.partial.jsonl: no such file/);
  });
});

describe('bench/output.ts: only the documented run writes to bench/results/', () => {
  let scratch = '';
  afterEach(() => {
    vi.restoreAllMocks();
    vi.unstubAllEnvs();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('the documented run writes the committed file, a trial the temp dir (and says so), --out wins', () => {
    scratch = mkdtempSync(join(tmpdir(), 'skv-output-'));
    vi.stubEnv('TMPDIR', scratch);
    let err = '';
    vi.spyOn(console, 'error').mockImplementation((m: unknown) => void (err += String(m)));
    const committed = 'bench/results/soak.json';
    expect(resultsPath('soak', undefined, committed, { steps: [20000, 20000], lengths: [[1, 2], [1, 2]] })).toBe(committed);
    expect(err).toBe('');
    expect(resultsPath('soak', undefined, committed, { steps: [100, 20000], lengths: [[1, 2], [1, 2]] })).toBe(join(tmpdir(), 'shadowkv', 'soak.json'));
    expect(err).toMatch(/^soak: a trial run \(--steps\): writing .*soak\.json, not the committed bench\/results\/soak\.json/);
    expect(resultsPath('soak', 'mine.json', committed, { steps: [100, 20000] })).toBe('mine.json');
  });
});
