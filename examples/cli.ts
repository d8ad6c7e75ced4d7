// Command-line flags of the examples: node's parseArgs, then every value checked by its kind (an
// integer or a number in a range, one of a few names, a string, a switch). A bad flag is one line
// that names it and what it takes (exit 2), and --help prints the flags; not a stack trace, and not
// minutes of work on NaN (`--tokens abc` ran the demo out of heap after 45 s).
import { parseArgs } from 'node:util';

/** One flag: its kind, default (absent: the flag is optional) and a few words for --help. */
export type Flag =
  | { kind: 'int' | 'number'; default?: number; min: number; max: number; doc: string }
  | { kind: 'choice'; default?: string; of: readonly string[]; doc: string }
  | { kind: 'string'; default?: string; doc: string }
  | { kind: 'switch'; doc: string };

type Value<F extends Flag> = F extends { kind: 'int' | 'number' } ? number : F extends { kind: 'switch' } ? boolean : string;
export type Flags<S extends Record<string, Flag>> = { [K in keyof S]: S[K] extends { default: unknown } | { kind: 'switch' } ? Value<S[K]> : Value<S[K]> | undefined };

/** The flags of `process.argv` checked against `spec`; on a bad one, prints why and exits with status 2. */
export function cli<S extends Record<string, Flag>>(command: string, about: string, spec: S, argv?: string[]): Flags<S> {
  const usage = () =>
    [`${command}: ${about}`, 'flags:', ...Object.entries(spec).map(([name, f]) => `  --${name}${f.kind === 'switch' ? '' : ` <${takes(f)}>`}  ${f.doc}${'default' in f && f.default !== undefined ? ` (default ${f.default})` : ''}`), '  --help  this list'].join('\n');
  const fail = (why: string): never => {
    console.error(`${command}: ${why}\n(--help lists the flags)`);
    process.exit(2);
  };
  let values: Record<string, string | boolean | undefined>;
  try {
    const options = Object.fromEntries([...Object.entries(spec).map(([name, f]) => [name, { type: f.kind === 'switch' ? 'boolean' : 'string' } as const]), ['help', { type: 'boolean' } as const]]);
    ({ values } = parseArgs({ args: argv ?? process.argv.slice(2), options, strict: true, allowPositionals: false }) as { values: Record<string, string | boolean | undefined> });
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
  for (const [name, f] of Object.entries(spec)) {
    const given = values[name];
    if (f.kind === 'switch') {
      out[name] = given === true;
      continue;
    }
    if (given === undefined) {
      out[name] = f.default;
      continue;
    }
    const text = given as string;
    if (f.kind === 'int' || f.kind === 'number') {
      const v = text.trim() === '' ? NaN : Number(text);
      if (!(Number.isFinite(v) && v >= f.min && v <= f.max && (f.kind === 'number' || Number.isInteger(v)))) fail(`--${name} takes ${takes(f)}, got '${text}'`);
      out[name] = v;
    } else if (f.kind === 'choice') {
      if (!f.of.includes(text)) fail(`--${name} takes ${takes(f)}, got '${text}'`);
      out[name] = text;
    } else {
      out[name] = text;
    }
  }
  return out as Flags<S>;
}

function takes(f: Flag): string {
  if (f.kind === 'int') return `an integer in [${f.min}, ${f.max}]`;
  if (f.kind === 'number') return `a number in [${f.min}, ${f.max}]`;
  if (f.kind === 'choice') return `one of ${f.of.join(', ')}`;
  return 'a string';
}
