import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CONTEXT } from './context.js';

// The docs' code blocks as a user copies them. Every ```ts block is written to a file of its own in
// this repository (test/docs/.snippets/<doc>/) and imports 'shadowkv' as it is written. Words after
// `ts` in a block's info string (GitHub shows only the language):
// - `run`: the block runs (`npx tsx <file>` from the repository's root) and must exit 0; a ```output
//   block next (the next fenced block) is what it must print
// - `file=NAME.ts`: the block's file name, so that another block of the same doc can import it
// - `with=a,b`: names the block uses but does not define: those of ./context.ts are declared (and
//   given values, to run), any other is imported from 'shadowkv'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const SNIPPETS = `${ROOT}test/docs/.snippets/`;

export interface Snippet {
  doc: string; // relative to ROOT
  line: number; // of the block's first code line
  code: string;
  run: boolean;
  output?: string;
  file: string; // relative to SNIPPETS
  preludeLines: number;
}

/** The Markdown files a user reads: the READMEs, docs/, bench/ and examples/. */
export function docFiles(): string[] {
  const md = (dir: string, deep: boolean) =>
    existsSync(`${ROOT}${dir}`) ? readdirSync(`${ROOT}${dir}`, { recursive: deep }).map(String).filter((f) => f.endsWith('.md')).map((f) => `${dir}/${f}`) : [];
  const packages = readdirSync(`${ROOT}packages`).map((p) => `packages/${p}/README.md`).filter((f) => existsSync(`${ROOT}${f}`));
  return ['README.md', ...md('docs', false), ...packages, ...md('bench', true), ...md('examples', true)];
}

interface Fence {
  line: number;
  info: string[];
  code: string;
}

/** Fenced blocks, indented ones (inside list items) included: their indent is taken off each line. */
function fences(text: string): Fence[] {
  const lines = text.split('\n');
  const out: Fence[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(.*)$/.exec(lines[i]);
    if (!open) continue;
    const indent = open[1].length;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !/^\s*```\s*$/.test(lines[j]); j++) body.push(lines[j].slice(indent));
    out.push({ line: i + 2, info: open[2].trim().split(/\s+/), code: body.join('\n') });
    i = j;
  }
  return out;
}

/** Declarations (or, for a block that runs, definitions) of a block's `with` names. */
function prelude(names: string[]): string[] {
  const own = names.filter((n) => n in CONTEXT);
  const sdk = names.filter((n) => !(n in CONTEXT));
  return [
    ...(own.length ? ["import * as __sdk from 'shadowkv';"] : []),
    ...(sdk.length ? [`import { ${sdk.join(', ')} } from 'shadowkv';`] : []),
    ...own.map((n) => (CONTEXT[n].value === undefined ? `declare const ${n}: ${CONTEXT[n].type};` : `const ${n}: ${CONTEXT[n].type} = ${CONTEXT[n].value};`)),
  ];
}

/** Writes every TypeScript block of the docs (after clearing earlier runs') and a tsconfig over them. */
export function writeSnippets(): Snippet[] {
  rmSync(SNIPPETS, { recursive: true, force: true });
  const snippets: Snippet[] = [];
  for (const doc of docFiles()) {
    const blocks = fences(readFileSync(`${ROOT}${doc}`, 'utf8'));
    blocks.forEach((b, k) => {
      if (b.info[0] !== 'ts' && b.info[0] !== 'typescript') return;
      const attr = (key: string) => b.info.find((w) => w.startsWith(`${key}=`))?.slice(key.length + 1);
      const next = blocks[k + 1];
      const dir = doc.replace(/\.md$/, '').replaceAll('/', '_');
      const file = `${dir}/${attr('file') ?? `line${b.line}.ts`}`;
      const head = prelude(attr('with')?.split(',') ?? []);
      mkdirSync(`${SNIPPETS}${dir}`, { recursive: true });
      writeFileSync(`${SNIPPETS}${file}`, `${head.join('\n')}\n${b.code}\nexport {};\n`);
      const run = b.info.includes('run');
      const output = run && next?.info[0] === 'output' ? next.code : undefined;
      snippets.push({ doc, line: b.line, code: b.code, run, output, file, preludeLines: head.length });
    });
  }
  // Unused locals are fine in a snippet; everything else is the repository's own settings (its paths included).
  writeFileSync(`${SNIPPETS}tsconfig.json`, `${JSON.stringify({ extends: '../../../tsconfig.json', compilerOptions: { noUnusedLocals: false }, include: ['**/*.ts'] }, null, 2)}\n`);
  return snippets;
}
