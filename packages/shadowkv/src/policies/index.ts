// Registers the built-in policies by name (createCache({ policy })).
import { resolveCacheOptions } from '../config.js';
import { registerPolicy } from '../createCache.js';
import { FullKVCache } from './FullKVCache.js';
import { ShadowKVCache } from './shadowkv/ShadowKVCache.js';

registerPolicy('full', ({ spec, cache, device }) => new FullKVCache(spec, resolveCacheOptions(cache), device));
registerPolicy('shadowkv', ({ spec, cache, device, options }) => new ShadowKVCache(spec, cache, device, options));
