import { ConfigError } from '../errors/ConfigError.js';
import type { Backend, BackendFactory, BackendInfo } from './Backend.js';

interface Entry {
  factory: BackendFactory;
  priority: number;
  started?: Promise<Backend>;
}

const backends = new Map<string, Entry>();

/**
 * Registers a backend under a name; `auto` tries backends by descending priority.
 * Registering the same factory again is a no-op; another factory under a taken name throws.
 * @example
 * registerBackend('wasm', async () => createWasmBackend(), 1);
 */
export function registerBackend(name: string, factory: BackendFactory, priority = 1): void {
  const have = backends.get(name);
  if (have && have.factory !== factory) throw new ConfigError(`backend '${name}' is already registered`);
  backends.set(name, { factory, priority });
}

/** Names of the registered backends, best first. */
export function listBackends(): string[] {
  return [...backends.entries()].sort((a, b) => b[1].priority - a[1].priority).map(([name]) => name);
}

async function start(name: string): Promise<Backend> {
  const entry = backends.get(name);
  if (!entry) throw new ConfigError(`unknown backend '${name}'; registered: ${listBackends().join(', ')}`);
  // A backend starts once per process; a failed start is retried on the next request.
  entry.started ??= entry.factory().catch((err: unknown) => {
    entry.started = undefined;
    throw err;
  });
  return entry.started;
}

/**
 * Resolves `'auto'` or a backend name. `auto` takes the best backend that starts and says in
 * `reason` why better ones were skipped; a named backend that cannot start throws its typed error.
 */
export async function resolveBackend(request: string = 'auto'): Promise<{ backend: Backend; info: BackendInfo }> {
  if (request !== 'auto') {
    const backend = await start(request);
    return { backend, info: { name: backend.name, description: backend.description, reason: `requested '${request}'` } };
  }
  const skipped: string[] = [];
  for (const name of listBackends()) {
    try {
      const backend = await start(name);
      const reason = skipped.length ? `auto: ${skipped.join('; ')}` : 'auto: best available backend';
      return { backend, info: { name, description: backend.description, reason } };
    } catch (err) {
      skipped.push(`${name} unavailable (${(err as Error).message})`);
    }
  }
  throw new ConfigError(`no backend could start: ${skipped.join('; ')}`);
}
