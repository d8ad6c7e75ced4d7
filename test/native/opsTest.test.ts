import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

// The runtime's own C++ checks (runtime/wasm/ops_test.cc), built natively from the wasm build's
// source list: every op against float64 references, the fused layer step against the ops one by
// one, the scratch arena, and malformed steps rejected with nothing changed.
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

it('runtime/wasm/ops_test.cc passes natively', () => {
  const sources = execFileSync('bash', [`${ROOT}runtime/wasm/build.sh`, '--sources'], { encoding: 'utf8' }).trim().split('\n');
  const binary = `${mkdtempSync(`${tmpdir()}/skv-ops-`)}/ops_test`;
  execFileSync('g++', ['-O1', '-std=c++17', ...sources, `${ROOT}runtime/wasm/ops_test.cc`, '-o', binary], { stdio: 'pipe' });
  const out = execFileSync(binary, { encoding: 'utf8' });
  const ok = out.split('\n').filter((l) => l.startsWith('ok ')).length;
  expect(out).not.toMatch(/^FAIL/m);
  expect(out).toMatch(/PASSED: 0 failed/);
  expect(ok).toBeGreaterThan(200);
}, 180_000);
