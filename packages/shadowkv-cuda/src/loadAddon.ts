import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NoBinaryError } from '../../shadowkv/src/errors/NoBinaryError.js';
import type { CudaAddon } from './AddonTypes.js';

/** An explicit path to `shadowkv_cuda.node`, tried first (e.g. a binary carried to a GPU machine). */
export const ADDON_ENV = 'SHADOWKV_CUDA_ADDON';
const FILE = 'shadowkv_cuda.node';

/** Where the addon may be, in the order tried. */
export interface AddonCandidate {
  path: string;
  /** How this place was chosen, for error messages. */
  source: string;
}

/**
 * The places `findAddon` looks, best first:
 * - `$SHADOWKV_CUDA_ADDON`, when set
 * - the local build, `runtime/cuda/build/Release/shadowkv_cuda.node` (`bash scripts/build-cuda.sh`)
 * - a prebuilt binary in this package, `prebuilds/<platform>-<arch>/shadowkv_cuda.node`
 */
export function addonCandidates(): AddonCandidate[] {
  const list: AddonCandidate[] = [];
  const explicit = process.env[ADDON_ENV];
  if (explicit) list.push({ path: resolve(explicit), source: `$${ADDON_ENV}` });
  list.push({ path: fileURLToPath(new URL(`../../../runtime/cuda/build/Release/${FILE}`, import.meta.url)), source: 'local build' });
  list.push({ path: fileURLToPath(new URL(`../prebuilds/${process.platform}-${process.arch}/${FILE}`, import.meta.url)), source: 'prebuilt' });
  return list;
}

/** The path of the first addon binary that exists; a NoBinaryError listing every place tried otherwise. */
export function findAddon(): string {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new NoBinaryError(`shadowkv-cuda: the CUDA addon is built for linux-x64 only, this is ${process.platform}-${process.arch}`);
  }
  const tried: string[] = [];
  for (const c of addonCandidates()) {
    if (existsSync(c.path)) return c.path;
    tried.push(`${c.source} ${c.path} (missing)`);
  }
  throw new NoBinaryError(
    `shadowkv-cuda: the shadowkv-cuda addon is not built; tried ${tried.join(', ')}. Build it with \`bash scripts/build-cuda.sh\` (nvcc and cmake), or point ${ADDON_ENV} at a shadowkv_cuda.node`,
  );
}

/** Loads the addon in this process. Only after `probeAddon` answered: a crash here takes the app with it. */
export function loadAddon(path: string): CudaAddon {
  try {
    return createRequire(import.meta.url)(path) as CudaAddon;
  } catch (err) {
    throw new NoBinaryError(`shadowkv-cuda: ${path} could not be loaded: ${(err as Error).message.split('\n')[0]}`);
  }
}
