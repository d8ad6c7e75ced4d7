import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { rng } from '../../packages/shadowkv/src/testing/random.js';

// bench/gpu/clocks.py, the summary that scripts/gpu/bench.sh appends to the GPU benchmark's log from
// nvidia-smi's samples (python3 comes with emscripten, which the tests install).
const dir = mkdtempSync(`${tmpdir()}/skv-clocks-`);
const START = Date.UTC(2026, 11, 4, 12, 0, 0) / 1000;

/** nvidia-smi's `timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu` line, local time, at START + t seconds. */
function line(t: number, sm: number | string): string {
  const d = new Date((START + t) * 1000), p = (n: number, w = 2) => String(n).padStart(w, '0');
  const stamp = `${d.getFullYear()}/${p(d.getMonth() + 1)}/${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  return `${stamp}, ${sm}, 3201, 412.50, 45`;
}

function summarize(lines: string[]): string[] {
  const path = `${dir}/clocks-${Math.random().toString(36).slice(2)}.csv`;
  writeFileSync(path, lines.map((l) => `${l}\n`).join(''));
  return execFileSync('python3', ['bench/gpu/clocks.py', path, String(START)], { encoding: 'utf8' }).trim().split('\n');
}

describe('bench/gpu/clocks.py: the GPU clock summary of a benchmark run', () => {
  it('finds every planted stretch of a lowered SM clock, in run.ts seconds, over 30 generated runs', () => {
    const rand = rng(7);
    for (let trial = 0; trial < 30; trial++) {
      const n = 20 + Math.floor(rand() * 60), top = 1980, low = new Array<boolean>(n).fill(false);
      for (let s = 0; s < 3; s++) { // up to three stretches, possibly touching
        const a = Math.floor(rand() * n), len = 1 + Math.floor(rand() * 6);
        for (let i = a; i < Math.min(n, a + len); i++) low[i] = true;
      }
      low[0] = false; // the highest clock is seen at least once
      const clocks = low.map((l) => (l ? Math.floor(top * (0.5 + 0.44 * rand())) : top - Math.floor(rand() * 0.04 * top)));
      clocks[0] = top;
      const want: string[] = [];
      for (let i = 0; i < n; i++) if (low[i] && !low[i - 1]) {
        let j = i;
        while (low[j + 1]) j++;
        want.push(`${(i * 0.5).toFixed(1)}-${(j * 0.5).toFixed(1)} s`);
      }
      const out = summarize(clocks.map((c, i) => line(i * 0.5, c)));
      expect(out[0], `trial ${trial}`).toContain(`(${n} samples`);
      expect(out[0]).toContain(`SM clock ${Math.min(...clocks)} / `);
      expect(out[0]).toContain(` / ${top} MHz`);
      expect(out[1], `trial ${trial}`).toBe(`bench: SM clock below 95 % of its max at: ${want.join(', ') || 'none'}`);
    }
  });

  it("skips samples the card did not report ('[N/A]'), cut lines and samples before run.ts started", () => {
    const out = summarize([line(-1, 1000), line(0, 1980), line(0.5, '[N/A]'), '2026/12/04 12:00:01', line(1, 1500), line(1.5, 1980)]);
    expect(out[0]).toContain('(3 samples');
    expect(out[0]).toContain('SM clock 1500 / 1980 / 1980 MHz');
    expect(out[1]).toBe('bench: SM clock below 95 % of its max at: 1.0-1.0 s');
  });

  it('says so when nvidia-smi gave no samples', () => {
    expect(summarize([])).toEqual(['bench: no GPU clock samples (nvidia-smi gave none)']);
  });
});
