import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { expect, it } from 'vitest';
import { docFiles, ROOT } from './snippets.js';

// Every relative link of the docs names a file of the repository, and its #anchor a heading of that
// file, as GitHub makes heading ids (lowercased; punctuation but '-' and '_' dropped; spaces to '-';
// a repeated id gets -1, -2, ...). A heading renamed or a file moved leaves links pointing nowhere.

/** The heading ids of a markdown file, outside fenced code. */
function anchors(text: string): Set<string> {
  const ids = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of text.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    const heading = fenced ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!heading) continue;
    const plain = heading[1].replace(/\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/`/g, '');
    const base = plain.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    ids.add(n ? `${base}-${n}` : base);
  }
  return ids;
}

/** Link targets of a markdown file (inline links and images), outside fenced and inline code. */
function links(text: string): { line: number; target: string }[] {
  const out: { line: number; target: string }[] = [];
  let fenced = false;
  text.split('\n').forEach((line, i) => {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    if (fenced) return;
    for (const [, target] of line.replace(/`[^`]*`/g, '').matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) out.push({ line: i + 1, target });
  });
  return out;
}

it('relative links of the docs name files and headings that exist', () => {
  const broken: string[] = [];
  const cache = new Map<string, Set<string>>();
  const idsOf = (file: string) => {
    if (!cache.has(file)) cache.set(file, anchors(readFileSync(file, 'utf8')));
    return cache.get(file)!;
  };
  let checked = 0;
  for (const doc of docFiles()) {
    const from = join(ROOT, doc);
    for (const { line, target } of links(readFileSync(from, 'utf8'))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, https:, mailto:
      checked++;
      const [path, anchor] = target.split('#', 2);
      const file = path ? join(dirname(from), decodeURIComponent(path)) : from;
      const where = `${doc}:${line}: ${target}`;
      if (!existsSync(file)) {
        broken.push(`${where} (no file ${relative(ROOT, file)})`);
        continue;
      }
      if (anchor === undefined || !file.endsWith('.md') || statSync(file).isDirectory()) continue;
      if (!idsOf(file).has(anchor)) broken.push(`${where} (no heading with that id in ${relative(ROOT, file)})`);
    }
  }
  expect(checked).toBeGreaterThan(20);
  expect(broken).toEqual([]);
});

it('heading ids follow GitHub\'s rule', () => {
  const ids = anchors('# Measured (CUDA, H200): faster, five of eight\n## `cache.decode()` and x\n```\n# not a heading\n```\n## Usage\n## Usage\n');
  expect([...ids]).toEqual(['measured-cuda-h200-faster-five-of-eight', 'cachedecode-and-x', 'usage', 'usage-1']);
});
