import { abortable, checkSignal } from '../abortable.js';
import { fmt } from '../config.js';
import { ConfigError } from '../errors/ConfigError.js';
import type { Backend, BackendFactory, BackendInfo } from './Backend.js';

interface Entry {
  factory: BackendFactory;
  priority: number;
  /** Starts the backend without awaiting, where the host allows it (the wasm backend under Node). */
  sync?: () => Backend | undefined;
  started?: Promise<Backend>;
  value?: Backend;
}

const backends = new Map<string, Entry>();
/** What `ready()` chose for `'auto'`. */
let defaultChoice: { backend: Backend; info: BackendInfo } | undefined;

/**
 * Registers a backend under a name; `auto` tries backends by descending priority.
 * Registering the same factory again sets its priority (and `sync`, if given); `auto` chooses again
 * at its next request. Another factory under a taken name throws.
 * @example
 * registerBackend('wasm-plain', () => createWasmBackend({ variant: 'plain' }), 0);
 */
export function registerBackend(name: string, factory: BackendFactory, priority = 1, options: { sync?: () => Backend | undefined } = {}): void {
  const have = backends.get(name);
  if (have && have.factory !== factory) throw new ConfigError(`backend '${name}' is already registered`);
  if (typeof priority !== 'number' || Number.isNaN(priority)) throw new ConfigError(`registerBackend('${name}'): priority must be a number, got ${fmt(priority)}`);
  if (!have) return void backends.set(name, { factory, priority, sync: options.sync });
  if (have.priority !== priority) defaultChoice = undefined;
  have.priority = priority;
  have.sync = options.sync ?? have.sync;
}

/** Names of the registered backends, best first. */
export function listBackends(): string[] {
  return [...backends.entries()].sort((a, b) => b[1].priority - a[1].priority).map(([name]) => name);
}

function entry(name: string): Entry {
  const e = backends.get(name);
  if (!e) throw new ConfigError(`unknown backend ${typeof name === 'string' ? `'${name}'` : `(a ${typeof name}, not a name)`}; registered: ${listBackends().join(', ')}`);
  return e;
}

async function start(name: string): Promise<Backend> {
  const e = entry(name);
  if (e.value) return e.value;
  // A backend starts once per process; a failed start is retried on the next request.
  // NOTE: called inside an async function, so that a factory that throws or returns a plain value
  // settles the shared promise as one that rejects or resolves would.
  e.started ??= (async () => e.factory())().then(
    (backend) => {
      if (typeof (backend as Partial<Backend> | undefined)?.createDevice !== 'function') {
        throw new ConfigError(`backend '${name}': its factory resolved to ${fmt(backend)}, not a Backend (an object with createDevice()); registerBackend takes a function returning a promise of one`);
      }
      // One started meanwhile by resolveBackendSync is kept: caches already made run on it.
      return (e.value ??= backend);
    },
    (err: unknown) => {
      e.started = undefined;
      throw err;
    },
  );
  return e.started;
}

/**
 * Resolves `'auto'` or a backend name. `auto` takes the best backend that starts and says in
 * `reason` why better ones were skipped; a named backend that cannot start throws its typed error.
 * Once `signal` aborts, the call rejects with its reason (a start under way goes on, for the next request).
 */
export async function resolveBackend(request: string = 'auto', signal?: AbortSignal): Promise<{ backend: Backend; info: BackendInfo }> {
  signal?.throwIfAborted();
  if (request !== 'auto') {
    const backend = await abortable(start(request), signal);
    return { backend, info: { name: backend.name, description: backend.description, reason: `requested '${request}'` } };
  }
  const skipped: string[] = [];
  for (const name of listBackends()) {
    try {
      const backend = await abortable(start(name), signal);
      const reason = skipped.length ? `auto: ${skipped.join('; ')}` : 'auto: best available backend';
      return { backend, info: { name, description: backend.description, reason } };
    } catch (err) {
      // An abort is the caller's answer, not this backend's failure: auto must not move on to the next.
      if (signal?.aborted && err === signal.reason) throw err;
      skipped.push(`${name} unavailable (${(err as Error).message})`);
    }
  }
  throw new ConfigError(`no backend could start: ${skipped.join('; ')}`);
}

/**
 * Loads the runtime up front, so that caches can then be constructed synchronously
 * (`new ShadowKVCache({ spec })`). Resolves to the backend `'auto'` (or `backend`) chose, and why.
 * @example
 * import { ready, ShadowKVCache, LLAMA3_8B } from 'shadowkv';
 * console.log((await ready()).reason);
 * const cache = new ShadowKVCache({ spec: LLAMA3_8B, budget: 2048 });
 */
export async function ready(options: { backend?: string; signal?: AbortSignal } = {}): Promise<BackendInfo> {
  const choice = await resolveBackend(options.backend ?? 'auto', checkSignal('ready()', options.signal));
  if ((options.backend ?? 'auto') === 'auto') defaultChoice = choice;
  return choice.info;
}

/**
 * The backend a synchronous constructor gets: one already started (by `ready()`, `createCache`, or
 * an earlier constructor), else one that starts synchronously (wasm under Node). Throws `ConfigError`
 * saying to `await ready()` when neither is possible.
 */
export function resolveBackendSync(request: string = 'auto'): { backend: Backend; info: BackendInfo } {
  if (request === 'auto' && defaultChoice) return defaultChoice;
  const names = request === 'auto' ? listBackends() : [request];
  for (const name of names) {
    const e = entry(name);
    // NOTE: also while an async start is under way (a createCache not yet resolved): it adopts this
    // value when it lands, so a constructor does not fail only because of a start in flight.
    if (!e.value && e.sync) {
      e.value = e.sync();
      if (e.value) e.started ??= Promise.resolve(e.value);
    }
    if (!e.value) continue;
    const reason = request === 'auto' ? `auto: constructed before ready(); took '${name}', already loaded (await ready() to let auto try every backend)` : `requested '${request}'`;
    return { backend: e.value, info: { name, description: e.value.description, reason } };
  }
  throw new ConfigError(`backend '${request}' is not loaded yet: call \`await ready(${request === 'auto' ? '' : `{ backend: '${request}' }`})\` before constructing a cache, or use \`await createCache(...)\``);
}
