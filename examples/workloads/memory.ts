// Process memory as the soak and the lifetime test read it: RSS after full collections.
import v8 from 'node:v8';
import vm from 'node:vm';

const MB = 2 ** 20;

/** Resident set size in MiB. */
export const rssMB = () => process.memoryUsage().rss / MB;

/** The global gc, exposed at run time when node was not started with --expose-gc (vitest's forks are not). */
export function globalGc(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) return g;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

/** Full collections with pauses between, so that freed wasm heaps are unmapped before RSS is read; returns RSS in MiB. */
export async function settledRssMB(gc = globalGc()): Promise<number> {
  for (let i = 0; i < 5; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return rssMB();
}
