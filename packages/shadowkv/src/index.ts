/**
 * shadowkv: ShadowKV's long-context KV cache for TypeScript. This entry point is what a model
 * loop needs; backend and policy authors import `shadowkv/backend`.
 * @packageDocumentation
 */
import './backends/index.js';
import './policies/index.js';

export type { BackendInfo } from './backends/Backend.js';
export { listBackends, ready } from './backends/registry.js';
export type { CacheOptions, ShadowKVOptions, ResolvedCacheOptions, ResolvedShadowKVOptions } from './config.js';
export { createCache, listPolicies, loadCache, type Cache, type CacheOf, type CreateCacheOptions, type OptionsOf, type PolicyTypes } from './createCache.js';
export { estimateMemory, type MemoryEstimate, type MemoryQuestion } from './estimateMemory.js';
export { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, fromNumbers, toFloat32 } from './dtype.js';
export * from './errors/index.js';
export type { BaseKVCache, CacheConfig } from './policies/BaseKVCache.js';
export { FullKVCache } from './policies/FullKVCache.js';
export type { AnyTensor, DecodeInput, DecodeOptions, KVCachePolicy, MemoryReport, PolicyStats, PrefillInput } from './policies/KVCachePolicy.js';
export { ShadowKVCache, type CompressAsyncOptions, type CompressOptions, type CompressProgress, type ShadowKVConfig } from './policies/shadowkv/ShadowKVCache.js';
export { StreamingCache, type StreamingOptions } from './policies/streaming/StreamingCache.js';
export { QuestCache, type QuestOptions } from './policies/quest/QuestCache.js';
export { SnapKVCache, type SnapKVOptions } from './policies/snapkv/SnapKVCache.js';
export { LLAMA3_8B, resolveSpec, ropeFrequencies, type Llama3RopeScaling, type ModelSpec, type ResolvedSpec, type RopeSpec, type RopeStyle } from './spec.js';
export { numel, tensor, type DType, type Tensor, type TensorData } from './tensor.js';
export { DeviceTensor, type TensorOwner } from './DeviceTensor.js';
export { SNAPSHOT_VERSION } from './snapshot.js';
