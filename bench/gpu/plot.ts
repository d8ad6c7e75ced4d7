// The GPU benchmark's plot, drawn as SVG by hand: grouped bars of the decode speedup against dense
// attention per context x batch, and a line at 1.0. Also a CLI to redraw from a JSON:
//   npx tsx bench/gpu/plot.ts bench/results/gpu-h200.json [out.svg]
import { readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { cli } from '../../examples/cli.js';
import type { CaseResult, Report } from './report.js';

const W = 960, H = 500;
const M = { left: 70, right: 30, top: 78, bottom: 92 };
const COLORS = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const text = (x: number, y: number, s: string, attrs = '') => `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${esc(s)}</text>`;
const kTokens = (n: number) => (n % 1024 === 0 ? `${n / 1024}K` : String(n));

/** Speedup of a case against dense SDPA, else against our own full policy (when sdpa.py did not run). */
function speedup(c: CaseResult, baseline: 'sdpa' | 'full'): number | undefined {
  const ours = c.shadowkv?.gpu_ms;
  const dense = baseline === 'sdpa' ? c.sdpa?.best?.ms : c.full?.decode.gpu_ms;
  return ours && dense ? dense / ours : undefined;
}

/** A tick step giving at most ~8 ticks up to `max`. */
function tickStep(max: number): number {
  const raw = max / 8;
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw)!;
}

export function plotSvg(r: Report): string {
  const baseline = r.cases.some((c) => c.sdpa?.best) ? 'sdpa' : 'full';
  const contexts = [...new Set(r.cases.map((c) => c.context))].sort((a, b) => a - b);
  const groups = contexts.map((S) => r.cases.filter((c) => c.context === S).sort((a, b) => a.batch - b.batch));
  const values = r.cases.map((c) => speedup(c, baseline)).filter((v): v is number => v !== undefined);
  const step = tickStep(Math.max(1, ...values) * 1.15);
  const yMax = Math.ceil((Math.max(1, ...values) * 1.15) / step) * step;
  const [pw, ph] = [W - M.left - M.right, H - M.top - M.bottom];
  const y = (v: number) => M.top + ph - (v / yMax) * ph;
  const perGroup = Math.max(1, ...groups.map((g) => g.length));
  const gw = pw / Math.max(groups.length, 1);
  const bw = Math.min((gw * 0.8) / perGroup, 90);
  const out: string[] = [];
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    out.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(text(M.left - 8, y(v) + 4, `${+v.toFixed(2)}×`, 'text-anchor="end" font-size="12"'));
  }
  groups.forEach((cases, gi) => {
    const x0 = M.left + gi * gw + (gw - cases.length * bw) / 2;
    cases.forEach((c, bi) => {
      const v = speedup(c, baseline);
      const x = x0 + bi * bw;
      if (v !== undefined) {
        out.push(`<rect x="${(x + 2).toFixed(1)}" y="${y(v).toFixed(1)}" width="${(bw - 4).toFixed(1)}" height="${(y(0) - y(v)).toFixed(1)}" fill="${COLORS[bi % COLORS.length]}"/>`);
        out.push(text(x + bw / 2, y(v) - 5, `${v.toFixed(2)}×`, 'text-anchor="middle" font-size="12"'));
      } else {
        out.push(text(x + bw / 2, y(0) - 5, 'n/a', 'text-anchor="middle" font-size="11" fill="#888"'));
      }
      out.push(text(x + bw / 2, y(0) + 16, `B=${c.batch}`, 'text-anchor="middle" font-size="12"'));
    });
    out.push(text(x0 + (cases.length * bw) / 2, y(0) + 40, `${kTokens(contexts[gi]!)} tokens`, 'text-anchor="middle" font-size="14" font-weight="bold"'));
  });
  out.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${y(1).toFixed(1)}" y2="${y(1).toFixed(1)}" stroke="#c00" stroke-dasharray="6 4" stroke-width="1.5"/>`);
  // The legend of the 1× line sits under the axis labels, where no bar can cover it.
  out.push(`<line x1="${M.left}" x2="${M.left + 36}" y1="${H - 16}" y2="${H - 16}" stroke="#c00" stroke-dasharray="6 4" stroke-width="1.5"/>`);
  out.push(text(M.left + 44, H - 12, baseline === 'sdpa' ? 'dense SDPA (1×: as fast as dense)' : 'own full policy (1×)', 'font-size="12" fill="#c00"'));
  out.push(`<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${y(0)}" stroke="#333"/><line x1="${M.left}" x2="${W - M.right}" y1="${y(0)}" y2="${y(0)}" stroke="#333"/>`);
  const vs = baseline === 'sdpa' ? 'PyTorch SDPA (dense, bf16)' : 'our own full policy (no SDPA timings in this run)';
  const method = r.cases.find((c) => c.shadowkv)?.shadowkv?.method ?? '';
  const head = [
    text(M.left, 26, `ShadowKV decode step against ${vs}: ${r.card.name}`, 'font-size="16" font-weight="bold"'),
    text(M.left, 46, `One Llama-3-8B layer (32 q heads, 8 kv heads, d=128), budget 2048, rank 160; queries drift ${r.workload.prompt.drift} per step. ${r.date.slice(0, 16)} UTC`, 'font-size="12" fill="#444"'),
    text(M.left, 62, `speedup = dense ms / ShadowKV GPU ms (${method.split(' (')[0]}). Targets at 128K: >= 2.5× at batch 4, >= 1.5× at batch 1.`, 'font-size="12" fill="#444"'),
    text(M.left - 50, M.top + ph / 2, 'speedup', `font-size="13" transform="rotate(-90 ${M.left - 50} ${M.top + ph / 2})" text-anchor="middle"`),
  ];
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">\n`
    + `<rect width="${W}" height="${H}" fill="white"/>\n${[...head, ...out].join('\n')}\n</svg>\n`;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { json, svg } = cli('bench/gpu/plot', "redraws the GPU benchmark's plot from its JSON", {
    json: { kind: 'arg', doc: 'a gpu-<card>.json' },
    svg: { kind: 'arg', optional: true, doc: 'the SVG to write (default: the JSON path with .svg)' },
  });
  const out = svg ?? json.replace(/\.json$/, '') + '.svg';
  writeFileSync(out, plotSvg(JSON.parse(readFileSync(json, 'utf8')) as Report));
  console.log(`wrote ${out}`);
}
