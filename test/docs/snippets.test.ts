import { execFileSync } from 'node:child_process';
import { expect, it } from 'vitest';
import { ROOT, writeSnippets, type Snippet } from './snippets.js';

// Every TypeScript block of the docs type-checks as a user's file in this repository ('shadowkv' as
// written, no build), and the blocks marked `run` run and print what the doc quotes (./snippets.ts).
const snippets = writeSnippets();
const DIR = 'test/docs/.snippets/';

/** Runs a command from the repository's root: its exit, stdout and stderr. */
function sh(cmd: string, args: string[]): { ok: boolean; stdout: string; stderr: string } {
  try {
    return { ok: true, stdout: execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8', stdio: 'pipe' }), stderr: '' };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** A compiler message about a snippet file, pointed at the doc's line instead. */
function inDoc(message: string): string {
  const m = /^test\/docs\/\.snippets\/(.+?)\((\d+),\d+\): (.*)$/.exec(message);
  const s = m && snippets.find((x) => x.file === m[1]);
  if (!m || !s) return message;
  const line = Number(m[2]) - s.preludeLines;
  return line > 0 ? `${s.doc}:${s.line + line - 1}: ${m[3]}` : `${s.doc}:${s.line} (its with= names): ${m[3]}`;
}

it('every TypeScript block of the docs type-checks', () => {
  expect(snippets.filter((s) => s.doc === 'README.md').length, "README has a ```ts block").toBeGreaterThan(0);
  const tsc = sh('npx', ['tsc', '--noEmit', '--pretty', 'false', '-p', DIR]);
  const errors = tsc.stdout.split('\n').filter((l) => /error TS\d+/.test(l)).map(inDoc);
  expect(errors).toEqual([]);
  expect(tsc.ok, tsc.stdout + tsc.stderr).toBe(true);
}, 120_000);

const where = (s: Snippet) => `${s.doc}:${s.line}`;
for (const s of snippets.filter((x) => x.run)) {
  it(`${where(s)} runs${s.output === undefined ? '' : ' and prints the output the doc quotes'}`, () => {
    const run = sh('npx', ['tsx', `${DIR}${s.file}`]);
    expect(run.ok, `${where(s)} failed:\n${run.stderr}`).toBe(true);
    if (s.output !== undefined) expect(run.stdout.trimEnd()).toBe(s.output.trimEnd());
  }, 120_000);
}
