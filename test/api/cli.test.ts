// The examples' flags (examples/cli.ts): a bad value is one line naming the flag and what it takes,
// exit 2, before any work (`--tokens abc` once ran the demo out of heap after 45 s).
import { afterEach, describe, expect, it, vi } from 'vitest';
import { cli } from '../../examples/cli.js';

const spec = {
  tokens: { kind: 'int', default: 8192, min: 256, max: 65536, doc: 'haystack tokens' },
  budget: { kind: 'number', default: 0.5, min: 1e-4, max: 1, doc: 'share' },
  task: { kind: 'choice', default: 'a', of: ['a', 'b'], doc: 'task' },
  focus: { kind: 'number', min: 0, max: 64, doc: 'optional' },
  fast: { kind: 'switch', doc: 'a switch' },
} as const;

/** What cli() printed and the status it exited with, for argv. */
function run(argv: string[]): { status?: number; err: string; out: string; value?: unknown } {
  let err = '', out = '';
  vi.spyOn(console, 'error').mockImplementation((m: unknown) => void (err += String(m)));
  vi.spyOn(console, 'log').mockImplementation((m: unknown) => void (out += String(m)));
  vi.spyOn(process, 'exit').mockImplementation(((code: number) => {
    throw Object.assign(new Error('exit'), { status: code });
  }) as never);
  try {
    return { value: cli('demo', 'a test', spec, argv), err, out };
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
