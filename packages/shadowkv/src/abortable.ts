import { fmt } from './config.js';
import { ConfigError } from './errors/ConfigError.js';

/**
 * Refuses a `signal` option that is not an AbortSignal, naming the call. NOTE: by shape, not
 * instanceof: a signal of another realm (an iframe's, a vm context's) is one too.
 */
export function checkSignal(call: string, signal: unknown): AbortSignal | undefined {
  if (signal === undefined) return undefined;
  const s = signal as Partial<AbortSignal> | null;
  const like = typeof s === 'object' && s !== null && typeof s.aborted === 'boolean' && typeof s.addEventListener === 'function' &&
    typeof s.removeEventListener === 'function' && typeof s.throwIfAborted === 'function';
  if (!like) throw new ConfigError(`${call}: signal must be an AbortSignal, got ${fmt(signal)}`);
  return signal as AbortSignal;
}

/**
 * `work`, or a rejection with `signal.reason` as soon as the signal aborts, as the platform's own
 * calls do (an already aborted signal rejects at once). NOTE: `work` itself is not stopped; a
 * rejection it settles with later is handled here, so it never surfaces as an unhandled rejection.
 */
export function abortable<T>(work: T | PromiseLike<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return Promise.resolve(work);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    Promise.resolve(work).then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
