// Registers the built-in policies by name (createCache({ policy })).
import { registerPolicy } from '../createCache.js';
import { FullKVCache } from './FullKVCache.js';
import { ShadowKVCache } from './shadowkv/ShadowKVCache.js';

registerPolicy('full', (config, runtime) => new FullKVCache(config, runtime));
registerPolicy('shadowkv', (config, runtime) => new ShadowKVCache(config, runtime));
