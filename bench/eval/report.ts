// The evaluation's outputs: accuracy per (task, length, policy, budget) as JSON, a markdown table
// and an SVG plot (one panel per task: accuracy against context length, a line per policy).
import type { Answer } from './evaluate.js';

/** Accuracy of one (task, length, policy, budget) cell. */
export interface Cell {
  task: string;
  length: number;
  policy: string;
  budget?: number;
  correct: number;
  total: number;
  accuracy: number;
  /** Mean output agreement with `full` at the first decode step (cosine; absent for `full` itself). */
  agreement?: number;
  /** Mean tokens attended per kv head at the last step, over layers (`stats().stepAttendedTokens`). */
  attended: number;
}

/** `policy` or `policy @ 1.56 %`. */
export const label = (policy: string, budget?: number) => (budget === undefined ? policy : `${policy} @ ${+(100 * budget).toFixed(2)} %`);
const kTokens = (n: number) => (n % 1024 === 0 ? `${n / 1024}K` : String(n));

export function cells(answers: readonly Answer[]): Cell[] {
  const by = new Map<string, Cell & { agreements: number }>();
  for (const a of answers) {
    const key = `${a.task}|${a.length}|${label(a.policy, a.budget)}`;
    const c = by.get(key) ?? { task: a.task, length: a.length, policy: a.policy, ...(a.budget !== undefined ? { budget: a.budget } : {}), correct: 0, total: 0, accuracy: 0, attended: 0, agreements: 0 };
    c.attended = (c.attended * c.total + a.attended) / (c.total + 1);
    c.total += 1;
    c.correct += a.correct ? 1 : 0;
    c.accuracy = c.correct / c.total;
    if (a.agreement !== undefined) c.agreement = ((c.agreement ?? 0) * c.agreements + a.agreement) / ++c.agreements;
    by.set(key, c);
  }
  return [...by.values()].map(({ agreements: _n, ...c }) => c);
}

/**
 * One table per task: a row per policy (and budget), a column per length, accuracy in % · output
 * agreement with `full`; then the tokens each row's steps attended, which budgets are meant to equal.
 */
export function markdownTable(all: readonly Cell[]): string {
  const out: string[] = [];
  const lengthsOf = (cs: readonly Cell[]) => [...new Set(cs.map((c) => c.length))].sort((a, b) => a - b);
  for (const task of [...new Set(all.map((c) => c.task))]) {
    const mine = all.filter((c) => c.task === task);
    const lengths = lengthsOf(mine);
    const rows = [...new Set(mine.map((c) => label(c.policy, c.budget)))];
    out.push(`### ${task}`, '', `| policy | ${lengths.map(kTokens).join(' | ')} |`, `|---|${lengths.map(() => '---:').join('|')}|`);
    for (const row of rows) {
      const at = (n: number) => mine.find((c) => c.length === n && label(c.policy, c.budget) === row);
      out.push(`| ${row} | ${lengths.map((n) => { const c = at(n); return c ? `${(100 * c.accuracy).toFixed(0)} % (${c.correct}/${c.total})${c.agreement !== undefined ? ` · ${c.agreement.toFixed(3)}` : ''}` : ''; }).join(' | ')} |`);
    }
    out.push('');
  }
  const lengths = lengthsOf(all);
  out.push('### tokens attended per step', '', 'Per kv head at the last step, averaged over layers (`stats().stepAttendedTokens`) and prompts.', '',
    `| policy | ${lengths.map(kTokens).join(' | ')} |`, `|---|${lengths.map(() => '---:').join('|')}|`);
  for (const row of [...new Set(all.map((c) => label(c.policy, c.budget)))]) {
    const mean = (n: number) => {
      const cs = all.filter((c) => c.length === n && label(c.policy, c.budget) === row);
      const total = cs.reduce((t, c) => t + c.total, 0);
      return total ? (cs.reduce((t, c) => t + c.attended * c.total, 0) / total).toFixed(0) : '';
    };
    out.push(`| ${row} | ${lengths.map(mean).join(' | ')} |`);
  }
  out.push('');
  return out.join('\n');
}

const COLORS = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#9c755f'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const text = (x: number, y: number, s: string, attrs = '') => `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${esc(s)}</text>`;

/** Panels of accuracy (0-100 %) against length; `full` black, a budget one colour: shadowkv solid, streaming dashed, others dotted. */
export function plotSvg(all: readonly Cell[], title: string): string {
  const tasks = [...new Set(all.map((c) => c.task))];
  const lengths = [...new Set(all.map((c) => c.length))].sort((a, b) => a - b);
  const series = [...new Set(all.map((c) => label(c.policy, c.budget)))];
  const budgets = [...new Set(all.flatMap((c) => (c.budget === undefined ? [] : [c.budget])))].sort((a, b) => a - b);
  const style = (s: string) => {
    const cell = all.find((c) => label(c.policy, c.budget) === s)!;
    const color = cell.budget === undefined ? '#000' : COLORS[budgets.indexOf(cell.budget) % COLORS.length]!;
    const dash = cell.policy === 'streaming' ? ' stroke-dasharray="5 4"' : cell.policy === 'shadowkv' || cell.policy === 'full' ? '' : ' stroke-dasharray="1 3"';
    return { color, dash };
  };
  const [pw, ph, gap, left, top] = [230, 220, 40, 60, 70];
  const W = left + tasks.length * (pw + gap), H = top + ph + 60 + 18 * Math.ceil(series.length / 3);
  const out: string[] = [text(left, 26, title, 'font-size="16" font-weight="bold"'), text(left, 46, 'accuracy (exact answer) against context length, per task and policy', 'font-size="12" fill="#444"')];
  tasks.forEach((task, ti) => {
    const x0 = left + ti * (pw + gap);
    const x = (n: number) => x0 + (lengths.length === 1 ? pw / 2 : (lengths.indexOf(n) / (lengths.length - 1)) * pw);
    const y = (a: number) => top + ph - a * ph;
    for (const v of [0, 0.25, 0.5, 0.75, 1]) {
      out.push(`<line x1="${x0}" x2="${x0 + pw}" y1="${y(v)}" y2="${y(v)}" stroke="#e5e5e5"/>`);
      if (ti === 0) out.push(text(x0 - 6, y(v) + 4, `${v * 100} %`, 'text-anchor="end" font-size="11"'));
    }
    out.push(text(x0 + pw / 2, top - 8, task, 'text-anchor="middle" font-size="13" font-weight="bold"'));
    lengths.forEach((n) => out.push(text(x(n), top + ph + 16, kTokens(n), 'text-anchor="middle" font-size="11"')));
    series.forEach((s) => {
      const pts = lengths.flatMap((n) => all.filter((c) => c.task === task && c.length === n && label(c.policy, c.budget) === s).map((c) => [x(n), y(c.accuracy)] as const));
      const { color, dash } = style(s);
      out.push(`<polyline points="${pts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(' ')}" fill="none" stroke="${color}" stroke-width="2"${dash}/>`);
      pts.forEach(([a, b]) => out.push(`<circle cx="${a.toFixed(1)}" cy="${b.toFixed(1)}" r="3" fill="${color}"/>`));
    });
    out.push(`<line x1="${x0}" x2="${x0}" y1="${top}" y2="${top + ph}" stroke="#333"/><line x1="${x0}" x2="${x0 + pw}" y1="${top + ph}" y2="${top + ph}" stroke="#333"/>`);
  });
  series.forEach((s, i) => {
    const { color, dash } = style(s);
    const [lx, ly] = [left + (i % 3) * 300, top + ph + 44 + 18 * Math.floor(i / 3)];
    out.push(`<line x1="${lx}" x2="${lx + 28}" y1="${ly - 4}" y2="${ly - 4}" stroke="${color}" stroke-width="2"${dash}/>`, text(lx + 34, ly, s, 'font-size="12"'));
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">\n<rect width="${W}" height="${H}" fill="white"/>\n${out.join('\n')}\n</svg>\n`;
}
