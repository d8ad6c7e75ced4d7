import { ShadowKVError } from './ShadowKVError.js';

/** Invalid options, model spec, or policy/backend name. */
export class ConfigError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_CONFIG', message);
  }
}
