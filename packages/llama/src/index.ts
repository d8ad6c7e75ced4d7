/**
 * shadowkv-llama: a Llama-family model loop over any shadowkv `KVCachePolicy`: Hugging Face
 * safetensors checkpoints, a forward pass (wasm SIMD matmuls, or a device's gemm: the GPU on cuda),
 * sampling, streaming generation, byte and byte-level BPE tokenizers, and cache options sized to the model.
 * @packageDocumentation
 */
export { CheckpointError, type CheckpointProblem } from './errors/CheckpointError.js';
export { TokenizerError } from './errors/TokenizerError.js';
export { hfConfigJson, llamaSpec, parseLlamaConfig, type CacheHints, type LlamaConfig, type RopeSpelling } from './checkpoint/LlamaConfig.js';
export { assembleWeights, type LayerWeights, type Linear, type LlamaWeights } from './checkpoint/LlamaWeights.js';
export { loadCheckpoint, readCheckpoint, type Checkpoint, type CheckpointReader } from './checkpoint/loadCheckpoint.js';
export { encodeSafetensors, readSafetensors, type ByteSource, type RawTensor } from './checkpoint/safetensors.js';
export { weightSlots, type WeightSlot } from './checkpoint/weightLayout.js';
export { checkpointFiles, randomWeights, writeCheckpoint, type CheckpointLayout } from './checkpoint/writeCheckpoint.js';
export { DeviceMatmul } from './model/DeviceMatmul.js';
export { JsMatmul } from './model/JsMatmul.js';
export type { Matmul, MatmulWeight } from './model/Matmul.js';
export { WasmMatmul } from './model/WasmMatmul.js';
export { LlamaModel, type ForwardOptions, type LlamaModelOptions, type PrefillOptions } from './model/LlamaModel.js';
export { generate, type GeneratedToken, type GenerateOptions } from './generate/generate.js';
export { argmax, Sampler, type SamplingOptions } from './generate/sample.js';
export { Rng } from './generate/Rng.js';
export { Tokenizer, StreamDecoder } from './tokenizer/Tokenizer.js';
export { ByteTokenizer } from './tokenizer/ByteTokenizer.js';
export { BpeTokenizer } from './tokenizer/BpeTokenizer.js';
export { fitCacheOptions, type CacheFit, type FitQuestion } from './fitCacheOptions.js';
