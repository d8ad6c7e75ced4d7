/** Every error code shadowkv throws; `err.code` is one of these. */
export type ErrorCode =
  | 'SKV_SHAPE'
  | 'SKV_DTYPE'
  | 'SKV_LAYER_INDEX'
  | 'SKV_SEQUENCE_INDEX'
  | 'SKV_CAPACITY'
  | 'SKV_NON_FINITE'
  | 'SKV_DISPOSED'
  | 'SKV_SNAPSHOT'
  | 'SKV_CONFIG'
  | 'SKV_NO_DEVICE'
  | 'SKV_NO_BINARY'
  | 'SKV_WASM_INIT'
  | 'SKV_WASM_TRAP'
  | 'SKV_CUDA'
  | 'SKV_OUT_OF_MEMORY'
  | 'SKV_DEVICE_MISMATCH'
  | 'SKV_REENTRANT'
  // Raised by the model-loop package (packages/llama): a checkpoint or tokenizer file that cannot be loaded.
  | 'SKV_CHECKPOINT'
  | 'SKV_TOKENIZER';
