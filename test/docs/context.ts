// What a doc block's free names stand for (its `with=` list, ./snippets.ts): a type, and a value where
// one can be made here (to run the block). Source text, in a file that has `import * as __sdk from 'shadowkv'`.
// The spec is Llama-3-8B's; tensors hold one row (the README's batch 1), host bits `ROWS` rows, as `cache` does.
const ROWS = 2;
const PROMPT = 64;
const numbers = (n: number) => `new Float32Array(${n}).map((_, i) => Math.sin(i))`;
const f32 = (shape: number[]) => `__sdk.tensor(${numbers(shape.reduce((a, b) => a * b))}, [${shape.join(', ')}])`;
const bf16 = (heads: number) => `__sdk.fromNumbers(${numbers(ROWS * heads * 128)}, 'bf16')`;

export const CONTEXT: Record<string, { type: string; value?: string }> = {
  spec: { type: '__sdk.ModelSpec', value: '__sdk.LLAMA3_8B' },
  batch: { type: 'number', value: `${ROWS}` },
  layer: { type: 'number', value: '0' },
  h: { type: 'number', value: '0' }, // a kv head
  cache: { type: '__sdk.ShadowKVCache', value: `new __sdk.ShadowKVCache({ spec: __sdk.LLAMA3_8B, batch: ${ROWS}, maxTokens: 4096 })` },
  keys: { type: '__sdk.Tensor', value: f32([1, 8, PROMPT, 128]) },
  values: { type: '__sdk.Tensor', value: f32([1, 8, PROMPT, 128]) },
  queries: { type: '__sdk.Tensor', value: f32([1, 32, PROMPT, 128]) },
  query: { type: '__sdk.Tensor', value: f32([1, 32, 1, 128]) },
  key: { type: '__sdk.Tensor', value: f32([1, 8, 1, 128]) },
  value: { type: '__sdk.Tensor', value: f32([1, 8, 1, 128]) },
  qBits: { type: '__sdk.TensorData', value: bf16(32) },
  kBits: { type: '__sdk.TensorData', value: bf16(8) },
  vBits: { type: '__sdk.TensorData', value: bf16(8) },
  ptr: { type: 'number' }, // a CUDA device pointer of the host loop's: none here
  model: { type: "import('shadowkv-llama').LlamaModel" }, // a checkpoint's: none here
  longText: { type: 'string', value: "'The passkey is 71432. Remember it. '.repeat(64)" },
};
