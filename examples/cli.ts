// Command-line flags of the examples and benchmarks: node's parseArgs, then every value checked by
// its kind (an integer or a number in a range, a comma-separated list of them, one of a few names or
// a list of them, a string, a repeatable string, a switch, a positional argument). A bad flag is one
// line that names it and what it takes (exit 2), and --help prints the flags; not a stack trace, and
// not minutes of work on NaN (`--tokens abc` ran the demo out of heap after 45 s).
import { parseArgs } from 'node:util';

/** One flag: its kind, default (absent: the flag is optional) and a few words for --help. */
export type Flag =
  | { kind: 'int' | 'number'; default?: number; min: number; max: number; doc: string }
  /** Comma-separated, each in [min, max] (or one of `words`, e.g. `max`); no item twice. */
  | { kind: 'ints' | 'numbers'; default?: readonly (number | string)[]; min: number; max: number; words?: readonly string[]; doc: string }
  | { kind: 'choice'; default?: string; of: readonly string[]; doc: string }
  /** Comma-separated names of `of`; no name twice. */
  | { kind: 'choices'; default?: readonly string[]; of: readonly string[]; doc: string }
  | { kind: 'string'; default?: string; doc: string }
  /** Repeatable: every value given, in order (none: []). */
  | { kind: 'strings'; doc: string }
  | { kind: 'switch'; doc: string }
  /** A positional argument, in the order of the spec; required unless `optional`. */
  | { kind: 'arg'; optional?: boolean; doc: string };

type Value<F extends Flag> =
  F extends { kind: 'int' | 'number' } ? number
  : F extends { kind: 'ints'; words: readonly (infer W)[] } ? (number | W)[]
  : F extends { kind: 'ints' | 'numbers' } ? number[]
  : F extends { kind: 'choices' | 'strings' } ? string[]
  : F extends { kind: 'switch' } ? boolean
  : string;
type Always = { default: unknown } | { kind: 'switch' | 'strings' } | { kind: 'arg'; optional?: false };
export type Flags<S extends Record<string, Flag>> = { [K in keyof S]: S[K] extends Always ? Value<S[K]> : Value<S[K]> | undefined };

/** Prints `<command>: <why>` and the way to the flags, and exits with status 2: for checks across flags that `cli` cannot make. */
export function refuse(command: string, why: string): never {
  console.error(`${command}: ${why}\n(--help lists the flags)`);
  process.exit(2);
}

/** Refuses a run under an environment variable that a flag replaced (`{ SOAK_STEPS: '--steps' }`): ignored, it would run in full. */
export function refuseRetiredEnv(command: string, replaced: Record<string, string>): void {
  for (const [name, flag] of Object.entries(replaced)) if (process.env[name] !== undefined) refuse(command, `${name} is no longer read: pass ${flag} instead`);
}

/** The flags of `process.argv` (or `argv`) checked against `spec`; on a bad one, prints why and exits with status 2. */
export function cli<S extends Record<string, Flag>>(command: string, about: string, spec: S, argv?: string[]): Flags<S> {
  const entries = Object.entries(spec) as [string, Flag][];
  const flags = entries.filter(([, f]) => f.kind !== 'arg') as [string, Exclude<Flag, { kind: 'arg' }>][];
  const args = entries.filter(([, f]) => f.kind === 'arg') as [string, Extract<Flag, { kind: 'arg' }>][];
  const usage = () => [
    `${command}${args.map(([name, f]) => (f.optional ? ` [<${name}>]` : ` <${name}>`)).join('')} [flags]: ${about}`,
    ...args.map(([name, f]) => `  <${name}>  ${f.doc}`),
    'flags:',
    ...flags.map(([name, f]) => `  --${name}${f.kind === 'switch' ? '' : ` <${takes(f)}>`}  ${f.doc}${'default' in f && f.default !== undefined ? ` (default ${f.default})` : ''}`),
    '  --help  this list',
  ].join('\n');
  const fail = (why: string): never => refuse(command, why);
  let values: Record<string, string | string[] | boolean | undefined>;
  let positionals: string[];
  try {
    const options = Object.fromEntries([
      ...flags.map(([name, f]) => [name, f.kind === 'switch' ? { type: 'boolean' } : { type: 'string', multiple: f.kind === 'strings' }] as const),
      ['help', { type: 'boolean' }],
    ]) as Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>;
    ({ values, positionals } = parseArgs({ args: argv ?? process.argv.slice(2), options, strict: true, allowPositionals: args.length > 0 }) as { values: typeof values; positionals: string[] });
  } catch (err) {
    return fail((err as Error).message);
  }
  if (values.help) {
    console.log(usage());
    process.exit(0);
  }
  // A typed error of the SDK (a code, a message naming the problem) is the whole story: one line,
  // exit 1. Only for the process's own flags (a test passing argv keeps its runner's handlers).
  if (!argv) {
    process.on('uncaughtException', (err: Error & { code?: unknown }) => {
      console.error(typeof err?.code === 'string' && err.code.startsWith('SKV_') ? `${command}: ${err.message} [${err.code}]` : err);
      process.exit(1);
    });
  }
  const out: Record<string, unknown> = {};
  if (positionals.length > args.length) fail(`unexpected argument '${positionals[args.length]}'`);
  args.forEach(([name, f], i) => {
    if (positionals[i] === undefined && !f.optional) fail(`<${name}> is missing (${f.doc})`);
    out[name] = positionals[i];
  });
  for (const [name, f] of flags) {
    const given = values[name];
    if (f.kind === 'switch') out[name] = given === true;
    else if (f.kind === 'strings') out[name] = given ?? [];
    else if (given === undefined) out[name] = 'default' in f && f.default !== undefined ? (Array.isArray(f.default) ? [...f.default] : f.default) : undefined;
    else out[name] = check(name, f, given as string, fail);
  }
  return out as Flags<S>;
}

/** One flag's text as its kind's value, or `fail` saying what the flag takes. */
function check(name: string, f: Exclude<Flag, { kind: 'switch' | 'strings' | 'arg' }>, text: string, fail: (why: string) => never): unknown {
  const bad = () => fail(`--${name} takes ${takes(f)}, got '${text}'`);
  const number = (s: string, integer: boolean, min: number, max: number) => {
    const v = s.trim() === '' ? NaN : Number(s);
    return Number.isFinite(v) && v >= min && v <= max && (!integer || Number.isInteger(v)) ? v : bad();
  };
  if (f.kind === 'int' || f.kind === 'number') return number(text, f.kind === 'int', f.min, f.max);
  if (f.kind === 'choice') return f.of.includes(text) ? text : bad();
  if (f.kind === 'string') return text;
  const items = text.split(',').map((s) => s.trim());
  const list = f.kind === 'choices' ? items.map((s) => (f.of.includes(s) ? s : bad()))
    : items.map((s) => ('words' in f && f.words?.includes(s) ? s : number(s, f.kind === 'ints', f.min, f.max)));
  const twice = list.find((v, i) => list.indexOf(v) !== i);
  if (twice !== undefined) fail(`--${name} lists ${twice} twice`);
  return list;
}

function takes(f: Flag): string {
  const words = 'words' in f && f.words?.length ? ` or ${f.words.join(', ')}` : '';
  if (f.kind === 'int') return `an integer in [${f.min}, ${f.max}]`;
  if (f.kind === 'number') return `a number in [${f.min}, ${f.max}]`;
  if (f.kind === 'ints') return `integers in [${f.min}, ${f.max}]${words}, comma-separated`;
  if (f.kind === 'numbers') return `numbers in [${f.min}, ${f.max}]${words}, comma-separated`;
  if (f.kind === 'choice') return `one of ${f.of.join(', ')}`;
  if (f.kind === 'choices') return `some of ${f.of.join(', ')}, comma-separated`;
  if (f.kind === 'strings') return 'a string, repeatable';
  return 'a string';
}
