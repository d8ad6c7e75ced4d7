import { CACHE_CONFIG_KEYS } from '../../config.js';
import { ConfigError } from '../../errors/ConfigError.js';

/** How one option is checked: a number in a range (an integer unless `integer: false`), or one of a few values. */
export type OptionRule<T> = [T] extends [number]
  ? { default: T; min: number; max: number; integer?: boolean; doc?: string }
  : { default: T; oneOf: readonly T[]; doc?: string };

/** A rule per option of `O`: what `definePolicyOptions` takes. */
export type OptionRules<O> = { [K in keyof O]-?: OptionRule<Exclude<O[K], undefined>> };

/** A policy's options: their names, defaults and checks, resolved in one place. */
export interface PolicyOptionSpec<O extends object> {
  readonly keys: readonly string[];
  readonly defaults: Required<O>;
  /** Defaults filled in for the keys of `given` that are unset; every value checked. Throws `ConfigError` naming the option. */
  resolve(what: string, given: Partial<O>): Required<O>;
}

const show = (v: unknown) => (typeof v === 'string' ? `'${v}'` : typeof v === 'object' && v !== null ? Object.prototype.toString.call(v) : String(v));

/**
 * The typed options of a policy: each key with its default and range, plus `relate` for checks
 * across options (e.g. a budget that must be a multiple of the chunk size).
 * @example
 * const OPTIONS = definePolicyOptions<{ window?: number }>({ window: { default: 512, min: 1, max: 2 ** 20 } });
 */
export function definePolicyOptions<O extends object>(rules: OptionRules<O>, relate?: (o: Required<O>) => string | undefined): PolicyOptionSpec<O> {
  const entries = Object.entries(rules) as [string, Rule][];
  // The rules themselves first: a default its own rule refuses would be taken without a check.
  for (const [k, rule] of entries) {
    if (CACHE_CONFIG_KEYS.includes(k)) throw new ConfigError(`definePolicyOptions: '${k}' is an option of every cache (${CACHE_CONFIG_KEYS.join(', ')}); name the policy's option otherwise`);
    if (!rule.oneOf && !(typeof rule.min === 'number' && typeof rule.max === 'number' && rule.min <= rule.max)) {
      throw new ConfigError(`definePolicyOptions: ${k} needs oneOf, or numbers min <= max, got min ${show(rule.min)}, max ${show(rule.max)}`);
    }
    const problem = refusal(k, rule, rule.default);
    if (problem) throw new ConfigError(`definePolicyOptions: the default of ${problem}`);
  }
  const defaults = Object.fromEntries(entries.map(([k, r]) => [k, r.default])) as Required<O>;
  return {
    keys: entries.map(([k]) => k),
    defaults,
    resolve(what, given) {
      const o: Record<string, unknown> = { ...defaults };
      for (const [k, rule] of entries) {
        // NOTE: own keys only: an option named like an Object method must not read the prototype's.
        const v = Object.hasOwn(given, k) ? (given as Record<string, unknown>)[k] : undefined;
        if (v === undefined) continue;
        const problem = refusal(k, rule, v);
        if (problem) throw new ConfigError(`${what}: ${problem}`);
        o[k] = v;
      }
      const problem = relate?.(o as Required<O>);
      if (problem) throw new ConfigError(`${what}: ${problem}`);
      return o as Required<O>;
    },
  };
}

type Rule = { default: unknown; min?: number; max?: number; integer?: boolean; oneOf?: readonly unknown[] };

/** Why `rule` refuses value `v` of option `k` (a message naming both), or undefined. */
function refusal(k: string, rule: Rule, v: unknown): string | undefined {
  if (rule.oneOf) return rule.oneOf.includes(v) ? undefined : `${k} must be one of ${rule.oneOf.map(show).join(', ')}, got ${show(v)}`;
  const ok = typeof v === 'number' && Number.isFinite(v) && v >= rule.min! && v <= rule.max! && (rule.integer === false || Number.isInteger(v));
  return ok ? undefined : `${k} must be ${rule.integer === false ? 'a number' : 'an integer'} in [${rule.min}, ${rule.max}], got ${show(v)}`;
}
