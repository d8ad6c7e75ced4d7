import { BaseKVCache, type CacheConfig, type Runtime, type SequenceState } from '../BaseKVCache.js';
import type { PolicyOptionSpec } from './policyOptions.js';

/**
 * The base of a policy with typed options: `config` is the flat cache config plus the policy's
 * options `O`, checked (against `spec`'s rules) before a runtime is started; `options` holds them
 * resolved, and snapshots record them. A policy adds its hooks (`attendDecode`, ...).
 * @example
 * class Mine extends PolicyCache<MineOptions> {
 *   readonly name = 'mine';
 *   constructor(config: CacheConfig & MineOptions, runtime?: Runtime) { super(config, MINE_OPTIONS, runtime); }
 * }
 */
export abstract class PolicyCache<O extends object, S extends SequenceState = SequenceState> extends BaseKVCache<S> {
  readonly options: Readonly<Required<O>>;

  constructor(config: CacheConfig & O, spec: PolicyOptionSpec<O>, runtime?: Runtime) {
    // Options are checked first, so that a bad one starts no runtime.
    const given = config !== null && typeof config === 'object' ? (config as Partial<O>) : {};
    const options = spec.resolve(new.target.name, given);
    super(config, spec.keys, runtime);
    this.options = options;
  }

  policyOptions(): Record<string, unknown> {
    return { ...this.options };
  }
}
