import { runPolicyConformance } from '../../packages/shadowkv/src/testing/index.js';

runPolicyConformance({ name: 'full', wide: {}, tight: {}, dense: true });
