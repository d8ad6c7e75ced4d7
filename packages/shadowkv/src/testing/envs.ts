// Test environments: every (backend, storage dtype) pair. Suites run once per available env;
// an unavailable env is still listed, as skipped, with the reason its backend gave.
import { describe } from 'vitest';
import { resolveBackend, type Backend, type DType } from '../backend.js';

export interface TestEnv {
  name: string;
  backend: string;
  dtype: DType;
  /** Relative tolerance of outputs against the float64 oracle, from the backend. */
  tolerance: number;
  instance: Backend;
}

const ENV_LIST: { name: string; backend: string; dtype: DType }[] = [
  { name: 'wasm-f32', backend: 'wasm', dtype: 'f32' },
  { name: 'wasm-f16', backend: 'wasm', dtype: 'f16' },
  { name: 'wasm-bf16', backend: 'wasm', dtype: 'bf16' },
  { name: 'cuda-f32', backend: 'cuda', dtype: 'f32' },
  { name: 'cuda-f16', backend: 'cuda', dtype: 'f16' },
  { name: 'cuda-bf16', backend: 'cuda', dtype: 'bf16' },
];

async function probe(): Promise<{ ready: TestEnv[]; skipped: { name: string; reason: string }[] }> {
  const ready: TestEnv[] = [];
  const skipped: { name: string; reason: string }[] = [];
  for (const e of ENV_LIST) {
    try {
      const { backend } = await resolveBackend(e.backend);
      ready.push({ ...e, tolerance: backend.precision[e.dtype], instance: backend });
    } catch (err) {
      const { code, message } = err as { code?: string; message: string };
      const reason = e.backend !== 'cuda' ? message : code === 'SKV_NO_BINARY' ? 'no CUDA device (the shadowkv-cuda addon is not built here: bash scripts/build-cuda.sh)' : `no CUDA device (${message})`;
      skipped.push({ name: e.name, reason });
    }
  }
  return { ready, skipped };
}

export const ENVS = await probe();

/**
 * Runs `suite` once per available environment (the env name in every test name); lists each
 * unavailable one as a skipped suite that says why.
 */
export function forEachEnv(title: string, suite: (env: TestEnv) => void, only?: (env: { name: string; dtype: DType }) => boolean): void {
  for (const env of ENVS.ready.filter((e) => !only || only(e))) describe(`${title} [${env.name}]`, () => suite(env));
  for (const s of ENVS.skipped.filter((e) => !only || only(ENV_LIST.find((l) => l.name === e.name)!))) {
    describe.skip(`${title} [${s.name}] skipped: ${s.reason}`, () => suite(undefined as never));
  }
}
