// Registers the built-in policies by name (createCache({ policy })).
import { registerPolicy } from '../createCache.js';
import { FullKVCache } from './FullKVCache.js';
import { QuestCache } from './quest/QuestCache.js';
import { ShadowKVCache } from './shadowkv/ShadowKVCache.js';
import { SnapKVCache } from './snapkv/SnapKVCache.js';
import { StreamingCache } from './streaming/StreamingCache.js';

registerPolicy('full', (config, runtime) => new FullKVCache(config, runtime));
registerPolicy('shadowkv', (config, runtime) => new ShadowKVCache(config, runtime));
registerPolicy('streaming', (config, runtime) => new StreamingCache(config, runtime));
registerPolicy('quest', (config, runtime) => new QuestCache(config, runtime));
registerPolicy('snapkv', (config, runtime) => new SnapKVCache(config, runtime));
