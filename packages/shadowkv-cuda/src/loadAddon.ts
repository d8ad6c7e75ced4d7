import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NoBinaryError } from '../../shadowkv/src/errors/NoBinaryError.js';
import type { CudaAddon } from './AddonTypes.js';

/** An explicit path to `shadowkv_cuda.node` (e.g. a binary carried to a GPU machine): the only one tried when set. */
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
 * - `$SHADOWKV_CUDA_ADDON`, when set (not empty): that path alone, never another binary in its stead
 * - the local build, `runtime/cuda/build/Release/shadowkv_cuda.node` (`bash scripts/build-cuda.sh`)
 * - a prebuilt binary in this package, `prebuilds/<platform>-<arch>/shadowkv_cuda.node`
 */
export function addonCandidates(): AddonCandidate[] {
  const explicit = process.env[ADDON_ENV];
  if (explicit) return [{ path: resolve(explicit), source: `$${ADDON_ENV}` }];
  const list: AddonCandidate[] = [];
  list.push({ path: fileURLToPath(new URL(`../../../runtime/cuda/build/Release/${FILE}`, import.meta.url)), source: 'local build' });
  list.push({ path: fileURLToPath(new URL(`../prebuilds/${process.platform}-${process.arch}/${FILE}`, import.meta.url)), source: 'prebuilt' });
  return list;
}

/**
 * The path of the first addon binary that exists; a NoBinaryError listing every place tried
 * otherwise, or naming `$SHADOWKV_CUDA_ADDON` and why its path is not a binary (a typo there must
 * not load another build silently).
 */
export function findAddon(): string {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new NoBinaryError(`shadowkv-cuda: the CUDA addon is built for linux-x64 only, this is ${process.platform}-${process.arch}`);
  }
  const explicit = process.env[ADDON_ENV];
  if (explicit) {
    const path = resolve(explicit);
    const stat = statSync(path, { throwIfNoEntry: false });
    if (!stat?.isFile()) {
      const why = stat ? 'is not a file' : 'does not exist';
      throw new NoBinaryError(`shadowkv-cuda: ${ADDON_ENV} is ${JSON.stringify(explicit)}, and ${path} ${why}; point it at a shadowkv_cuda.node, or unset it to use the local build or the prebuilt binary`);
    }
    return path;
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
