// Spec and option limits: a configuration past any sane size is a typed error, at once and without
// allocating, while a real model's size is accepted. Each case runs in its own child process (a
// case that allocates gigabytes or loops for minutes is killed there, not here).
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { LIMIT_CASES, type LimitOutcome } from '../helpers/limitCases.js';

const CASE_MS = 2000;
const RSS_GROWTH_MB = 512;
// Startup (tsx, compiling the runtime) plus the case: a child past this is killed.
const KILL_MS = 30_000; // a safety net under load (CI runs suites in parallel); the bound on the case itself is CASE_MS
const SCRIPT = fileURLToPath(new URL('../helpers/limitCases.ts', import.meta.url));
const counts = { cases: 0 };

function runCase(index: number): Promise<LimitOutcome | string> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', SCRIPT, String(index)], { timeout: KILL_MS, killSignal: 'SIGKILL', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const line = stdout.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(line) as LimitOutcome);
      } catch {
        resolve(err?.killed ? `did not finish within ${KILL_MS} ms (killed)` : `the child failed: ${String(err?.message ?? '').slice(0, 200)} ${stderr.slice(-300)}`);
      }
    });
  });
}

// Two children at a time (the machine has 2 cores), started once for every test below.
const results: Promise<LimitOutcome | string>[] = [];
let running: Promise<unknown> = Promise.resolve();
const slots: Promise<unknown>[] = [Promise.resolve(), Promise.resolve()];
LIMIT_CASES.forEach((_, i) => {
  const slot = i % slots.length;
  const p = slots[slot]!.then(() => runCase(i));
  slots[slot] = p;
  results.push(p);
});
running = Promise.all(results);

describe('configurations past any sane limit', () => {
  it.each(LIMIT_CASES.map(([label, want], i) => [label, want, i] as const))('%s', async (label, want, i) => {
    counts.cases += 1;
    const r = await results[i]!;
    expect(typeof r === 'string' ? r : '', label).toBe('');
    const o = r as LimitOutcome;
    console.log(`limits: ${label}: ${o.outcome} in ${o.ms.toFixed(0)} ms, RSS +${o.rssGrowthMB.toFixed(0)} MB ${o.detail}`);
    if (want === 'either') expect(o.outcome, `${label}: ${o.detail}`).not.toBe('untyped');
    else expect(o.outcome, `${label}: ${o.detail}`).toBe(want);
    expect(o.ms, `${label}: took ${o.ms.toFixed(0)} ms`).toBeLessThan(CASE_MS);
    expect(o.rssGrowthMB, `${label}: RSS grew by ${o.rssGrowthMB.toFixed(0)} MB`).toBeLessThan(RSS_GROWTH_MB);
  }, 120_000);
  afterAll(async () => {
    await running;
    console.log(`limits counts: ${JSON.stringify(counts)}`);
  });
});
