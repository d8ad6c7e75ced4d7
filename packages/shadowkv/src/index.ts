/**
 * shadowkv: ShadowKV's long-context KV cache for TypeScript.
 * @packageDocumentation
 */
import './backends/index.js';
import './policies/index.js';

export type { Backend, BackendFactory, BackendInfo } from './backends/Backend.js';
export type { BufferDType, Device, DeviceBuffer, DeviceMemory, GemmArgs, HostArray, HostBuffer, LowRankOut, RebuildArgs, Segment, View } from './backends/Device.js';
export { at } from './backends/Device.js';
export { listBackends, registerBackend, resolveBackend } from './backends/registry.js';
export { createWasmBackend, type WasmBackendOptions } from './backends/wasm/WasmBackend.js';
export type { WasmVariant } from './backends/wasm/loadWasm.js';
export type { CacheOptions, ShadowKVOptions, ResolvedCacheOptions, ResolvedShadowKVOptions } from './config.js';
export { resolveCacheOptions, resolveShadowKVOptions } from './config.js';
export { createCache, listPolicies, loadCache, registerPolicy, type Cache, type CreateCacheOptions, type PolicyContext, type PolicyFactory } from './createCache.js';
export { estimateMemory, type MemoryEstimate, type MemoryQuestion } from './estimateMemory.js';
export { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, fromNumbers, toFloat32 } from './dtype.js';
export * from './errors/index.js';
export { BaseKVCache, type AttentionRows, type SequenceState } from './policies/BaseKVCache.js';
export { ExactRegion } from './policies/ExactRegion.js';
export { FullKVCache } from './policies/FullKVCache.js';
export type { DecodeInput, KVCachePolicy, MemoryReport, PolicyStats, PrefillInput } from './policies/KVCachePolicy.js';
export { ShadowKVCache, type ShadowState } from './policies/shadowkv/ShadowKVCache.js';
export { CompressedStore, type HeadStore } from './policies/shadowkv/CompressedStore.js';
export { decodeLayerComposed, type LayerStepCounts, type ShadowKVLayerStep } from './policies/shadowkv/decodeLayer.js';
export { LLAMA3_8B, resolveSpec, ropeFrequencies, type Llama3RopeScaling, type ModelSpec, type ResolvedSpec, type RopeSpec } from './spec.js';
export { numel, tensor, type DType, type Tensor, type TensorData } from './tensor.js';
export { SNAPSHOT_VERSION } from './snapshot.js';
