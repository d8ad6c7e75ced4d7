/**
 * shadowkv/backend: the surface for backend authors (the device contract, the layer step, the
 * registries) and policy authors (the base class, storage and the composed reference step).
 * Everything of `shadowkv` is re-exported here too.
 * @packageDocumentation
 */
export * from './index.js';
export type { Backend, BackendFactory } from './backends/Backend.js';
export {
  at, BUFFER_BYTES, type BufferDType, type Device, type DeviceBuffer, type DeviceMemory, type DeviceRoom, type FiniteCheck, type GemmArgs, type HostArray, type LowRankOut,
  type PagedBuffer, type RebuildArgs, type Segment, type Tier, type View,
} from './backends/Device.js';
export { COUNTER, COUNTERS, HEAD_FIELD, HEAD_FIELDS, HEAD_WORDS, type LayerStep, type SparseHandles, type StepGeometry, type StepRow, type TailHandles } from './backends/LayerStep.js';
export { registerBackend, resolveBackend, resolveBackendSync } from './backends/registry.js';
export { createWasmBackend, createWasmBackendSync, type WasmBackendOptions } from './backends/wasm/WasmBackend.js';
export { compileWasm, instantiateWasm, type WasmModule, type WasmVariant } from './backends/wasm/loadWasm.js';
export { WasmDevice } from './backends/wasm/WasmDevice.js';
export type { WasmExports, WasmMemory } from './backends/wasm/abi.js';
export { checkKeys, resolveCacheOptions, resolveShadowKVOptions } from './config.js';
export { registerPolicy, type PolicyFactory } from './createCache.js';
export { BaseKVCache, shift, type Attended, type AttentionRows, type RowPlan, type Runtime, type SavedRow, type SequenceState } from './policies/BaseKVCache.js';
export { PolicyCache } from './policies/plugin/PolicyCache.js';
export { definePolicyOptions, type OptionRule, type OptionRules, type PolicyOptionSpec } from './policies/plugin/policyOptions.js';
export { ChunkScoringCache, type ChunkScoringOptions, type ChunkState } from './policies/plugin/ChunkScoringCache.js';
export { attendRows, rowRuns } from './policies/plugin/attendRows.js';
export { QUEST_OPTIONS } from './policies/quest/QuestCache.js';
export { SNAPKV_OPTIONS } from './policies/snapkv/SnapKVCache.js';
export { STREAMING_OPTIONS } from './policies/streaming/StreamingCache.js';
export { ExactRegion } from './policies/ExactRegion.js';
export { deviceRoom, fitsRoom, preflight, type MemoryNeed } from './policies/preflight.js';
export { appendToken, compactRow, decodeLayerComposed, pageView } from './policies/decodeLayer.js';
export { reuseSlots, type SlotPlan } from './policies/reuseSlots.js';
export { CompressedStore, type StoreGeometry, type StoreSnapshot } from './policies/shadowkv/CompressedStore.js';
export type { ShadowState } from './policies/shadowkv/ShadowKVCache.js';
// What a native backend and a model loop build on (shadowkv-cuda and shadowkv-llama, packed, import these from here).
export { attentionTasks, bufferBytes, fp8ChunkBytes, outlierLists, packIndex, preRopeArgs, selectRows, type SpecHeads } from './backends/Device.js';
export { DTYPE_CODE, HOST_ARRAY, ROPE_STYLE_CODE, STATUS, storageCode } from './backends/codes.js';
export { MemoryLedger } from './backends/MemoryLedger.js';
export { throwLowRankStatus, throwStepStatus, type LowRankSizes } from './backends/statusErrors.js';
export { fmt, OPTION_LIMITS } from './config.js';
export { dataMatches, DTYPE_BYTES, knownDtype } from './dtype.js';
export { hasWasmSimd } from './backends/wasm/loadWasm.js';
