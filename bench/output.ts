// Where a benchmark writes: bench/results/ holds committed results, so only the documented run
// writes there by default. A trial (any flag that changes what is measured) writes the same file
// name under the temp dir instead, unless --out says where; a quick look never overwrites a
// committed result (`SOAK_STEPS=100 npm run soak` once replaced bench/results/soak.json).
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

/**
 * `out` when given; else `committed` when every entry of `grid` ([flag]: [value, documented value])
 * is at its documented value; else `basename(committed)` under `<tmpdir>/shadowkv/` (made here), said on stderr.
 */
export function resultsPath(command: string, out: string | undefined, committed: string, grid: Record<string, readonly [unknown, unknown]>): string {
  if (out !== undefined) return out;
  const changed = Object.entries(grid).filter(([, [value, documented]]) => JSON.stringify(value) !== JSON.stringify(documented)).map(([flag]) => `--${flag}`);
  if (!changed.length) return committed;
  const scratch = join(tmpdir(), 'shadowkv', basename(committed));
  mkdirSync(join(tmpdir(), 'shadowkv'), { recursive: true });
  console.error(`${command}: a trial run (${changed.join(', ')}): writing ${scratch}, not the committed ${committed} (--out <path> to choose)`);
  return scratch;
}
