import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

// The SDK bundled for the browser (esbuild), served with its wasm, run in headless Chromium.
const chromium = spawnSync('chromium', ['--version']).status === 0;
const suite = chromium ? describe : describe.skip;

suite(chromium ? 'browser' : 'browser skipped: chromium is not installed (bash scripts/setup.sh --browser)', () => {
  it('creates caches, prefills, compresses and decodes in headless Chromium on the wasm backend, in a page and a module worker', () => {
    const run = spawnSync('bash', ['scripts/browser-check.sh'], { encoding: 'utf8', timeout: 90_000 });
    const out = `${run.stdout}${run.stderr}`;
    expect(run.status, out).toBe(0); // the script's output is the message when it fails
    const m = /browser-check: ok backend=wasm \(simd\) compressions=(\d+) cosine=([\d.]+)/.exec(out);
    expect(m, out).not.toBeNull();
    expect(Number(m![1])).toBe(1);
    expect(Number(m![2])).toBeGreaterThan(0.9);
    // test/browser/worker.ts: a module worker saves and restores, and a CSP without 'wasm-unsafe-eval' is named with its fix.
    expect(out, out).toContain(' worker=ok csp=named');
  });
});
