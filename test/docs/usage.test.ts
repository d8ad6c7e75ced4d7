import { existsSync, readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { docFiles, ROOT } from './snippets.js';

// A doc line that shows how to call a script, with <placeholders>, is a usage line: where the script
// states its own (`usage: npx tsx <script> ...`), the doc's must be that one, or it has gone stale.
// Invocations with real arguments are examples and are not compared.
const INVOCATION = /npx tsx ([\w./-]+\.ts)( [^`\n|#]*<[^`\n|#]*)/g;

it('usage lines quoted in the docs are the scripts\' own', () => {
  const stale: string[] = [];
  for (const doc of docFiles()) {
    readFileSync(`${ROOT}${doc}`, 'utf8').split('\n').forEach((text, i) => {
      for (const [, script, args] of text.matchAll(INVOCATION)) {
        if (!existsSync(`${ROOT}${script}`)) {
          stale.push(`${doc}:${i + 1}: ${script} does not exist`);
          continue;
        }
        const own = new RegExp(`usage: npx tsx ${script.replaceAll('.', '\\.')} (.*?)(?:\\s{2}|['\`]|$)`, 'm').exec(readFileSync(`${ROOT}${script}`, 'utf8'))?.[1];
        if (own !== undefined && own.trim() !== args.trim()) stale.push(`${doc}:${i + 1}: ${script} ${args.trim()}, but the script says: ${own.trim()}`);
      }
    });
  }
  expect(stale).toEqual([]);
});
