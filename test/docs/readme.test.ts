import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

// The README's first TypeScript block type-checks against the SDK as written, with its free
// inputs (keys, values, query, key, value) declared as tensors.
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

it("the README's code snippet compiles against the public API", () => {
  const readme = readFileSync(`${ROOT}README.md`, 'utf8');
  const snippet = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(snippet, 'README has a ```ts block').toBeTruthy();
  const dir = `${ROOT}test/docs/.snippets`;
  mkdirSync(dir, { recursive: true });
  const file = `${dir}/readme.ts`;
  const prelude = "import type { Tensor } from '../../../packages/shadowkv/src/index.js';\ndeclare const keys: Tensor, values: Tensor, query: Tensor, key: Tensor, value: Tensor;\n";
  writeFileSync(file, prelude + snippet!.replaceAll("from 'shadowkv'", "from '../../../packages/shadowkv/src/index.js'") + '\nexport {};\n');
  const args = ['tsc', '--ignoreConfig', '--noEmit', '--strict', '--skipLibCheck', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--lib', 'es2022,esnext.disposable,dom', '--types', 'node', '--ignoreDeprecations', '6.0', file];
  let output = '';
  try {
    execFileSync('npx', args, { cwd: ROOT, encoding: 'utf8', stdio: 'pipe' });
  } catch (err) {
    output = `${(err as { stdout?: string }).stdout ?? ''}${(err as { stderr?: string }).stderr ?? ''}`;
  }
  expect(output).toBe('');
}, 60_000);
