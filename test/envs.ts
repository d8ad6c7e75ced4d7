// The test environments are the conformance kit's (shadowkv/testing), so plugin authors get the same ones.
export { ENVS, forEachEnv, type TestEnv } from '../packages/shadowkv/src/testing/envs.js';
