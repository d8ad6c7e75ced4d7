import { describe, expect, it } from 'vitest';
import { FullKVCache, ShadowKVCache, type DType } from '../../packages/shadowkv/src/backend.js';
import { argmax, ByteTokenizer, fitCacheOptions, generate, JsMatmul, LlamaModel, WasmMatmul, type LlamaConfig, type Matmul } from '../../packages/llama/src/index.js';
import { GQA, MHA, memoryCheckpoint } from './fixtures.js';
import { maxRelDiff, referenceLogits, tokens } from './reference.js';

// Tolerance of the f32 loop (f32 matmuls, f32 cache storage) against the float64 reference: the
// largest logit difference relative to the largest logit. f32 rounding through 2-3 layers of these
// widths lands near 1e-6; a wrong op (RoPE pairing, a missed bias, GQA grouping) is off by > 1e-1.
const LOGIT_TOLERANCE = 1e-4;


const matmuls: [string, () => Promise<Matmul>][] = [['js', async () => new JsMatmul()], ['wasm', () => WasmMatmul.create()]];

describe.each(matmuls)('forward pass against the float64 reference [%s matmul]', (_, makeMatmul) => {
  const cases: [string, LlamaConfig, DType][] = [['GQA, Llama-3 RoPE, untied, f32 weights', GQA, 'f32'], ['GQA, bf16 weights', GQA, 'bf16'], ['MHA, tied, biases, head_dim 12, f16 weights', MHA, 'f16']];
  it.each(cases)('%s: 19 prompt tokens in 3 chunks, then 5 decode steps', async (_, config, dtype) => {
    const { tensors, checkpoint } = memoryCheckpoint(config, { dtype, seed: 5 });
    using matmul = await makeMatmul(); // the caller's: model.dispose() leaves it
    const model = await LlamaModel.create(checkpoint, { matmul });
    const ids = tokens(24, config.vocabSize, 1);
    const want = referenceLogits(config, tensors, ids);
    const cache = new FullKVCache({ spec: model.spec, dtype: 'f32' });
    // The prompt: logits of every position, 7 + 7 + 5 tokens (three prefill calls per layer).
    for (const [from, to] of [[0, 7], [7, 14], [14, 19]] as const) {
      const got = model.forward(ids.slice(from, to), cache, { allLogits: true });
      for (let t = from; t < to; t++) expect(maxRelDiff(got.subarray((t - from) * config.vocabSize, (t - from + 1) * config.vocabSize), want[t]!)).toBeLessThan(LOGIT_TOLERANCE);
    }
    // Decode: one token at a time through cache.decode.
    for (let t = 19; t < 24; t++) expect(maxRelDiff(model.forward([ids[t]!], cache), want[t]!)).toBeLessThan(LOGIT_TOLERANCE);
    expect(cache.length()).toBe(24);
    cache.dispose();
    model.dispose();
  });
});

describe('matmuls', () => {
  it.each([[1, 'simd'], [2, 'simd'], [3, 'simd'], [4, 'simd'], [5, 'simd'], [17, 'simd'], [1, 'plain'], [17, 'plain']] as const)('wasm skv_linear matches float64 at M = %i rows [%s build] (K 300 crosses a column block, N 13 a quad tail)', async (M, variant) => {
    const wasm = await WasmMatmul.create(variant);
    expect(wasm.name).toBe(`wasm-${variant}`);
    const [K, N] = [300, 13];
    const x = Float32Array.from({ length: M * K }, (_, i) => Math.sin(i * 0.37));
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      const { tensors } = memoryCheckpoint({ ...GQA, hiddenSize: K, intermediateSize: N, layers: 1 }, { dtype });
      const weight = tensors.get('model.layers.0.mlp.up_proj.weight')!; // [N, K]
      const wide = new JsMatmul().prepare(weight) as unknown as { data: Float32Array };
      const out = new Float32Array(M * N);
      wasm.linear(x, M, wasm.prepare(weight), out);
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < N; n++) {
          let s = 0;
          for (let k = 0; k < K; k++) s += x[m * K + k]! * wide.data[n * K + k]!;
          expect(Math.abs(out[m * N + n]! - s)).toBeLessThan(1e-5 * Math.sqrt(K));
        }
      }
    }
    wasm.dispose();
  });
});

describe('generation', () => {
  it('greedy tokens are the same through the JS and the wasm matmul (40 tokens, bf16 weights)', async () => {
    const { checkpoint } = memoryCheckpoint(GQA, { dtype: 'bf16', seed: 9 });
    const runs: number[][] = [];
    for (const matmul of ['js', 'wasm'] as const) {
      const model = await LlamaModel.create(checkpoint, { matmul });
      const cache = new FullKVCache({ spec: model.spec, dtype: 'f32' });
      const out: number[] = [];
      for await (const t of generate(model, cache, tokens(30, GQA.vocabSize, 2), { maxNewTokens: 40, chunkTokens: 11 })) out.push(t.id);
      runs.push(out);
      cache.dispose();
      model.dispose();
    }
    expect(runs[0]).toHaveLength(40);
    expect(new Set(runs[0]).size).toBeGreaterThan(1); // not one token repeated: the check has something to compare
    expect(runs[1]).toEqual(runs[0]);
  });

  it('the first greedy token is the argmax of the reference logits; a stop token ends generation and is yielded', async () => {
    const { tensors, checkpoint } = memoryCheckpoint(GQA, { seed: 4 });
    const model = await LlamaModel.create(checkpoint);
    const prompt = tokens(12, GQA.vocabSize, 3);
    const first = argmax(Float32Array.from(referenceLogits(GQA, tensors, prompt)[11]!));
    const cache = new FullKVCache({ spec: model.spec, dtype: 'f32' });
    const got = [];
    for await (const t of generate(model, cache, prompt, { maxNewTokens: 10, stopTokens: [first] })) got.push(t);
    expect(got).toEqual([{ id: first, index: 0, stop: true }]);
    expect(cache.length()).toBe(12); // the last token is not run
    model.dispose();
  });

  it('sampled generation is reproducible by seed and streams text with a tokenizer', async () => {
    const config = { ...GQA, vocabSize: 256 };
    const { checkpoint } = memoryCheckpoint(config, { seed: 6 });
    const model = await LlamaModel.create(checkpoint);
    const tokenizer = new ByteTokenizer();
    const run = async (seed: number) => {
      const cache = new FullKVCache({ spec: model.spec, dtype: 'f32' });
      const ids: number[] = [];
      let text = '';
      for await (const t of generate(model, cache, tokenizer.encode('abc'), { maxNewTokens: 16, temperature: 1, topP: 0.9, seed, tokenizer })) {
        ids.push(t.id);
        text += t.text;
      }
      cache.dispose();
      return { ids, text };
    };
    const a = await run(1), b = await run(1), c = await run(2);
    expect(a).toEqual(b);
    expect(c.ids).not.toEqual(a.ids);
    expect(a.text).toBe(tokenizer.decode(a.ids).replace(/\uFFFD$/, '')); // an unfinished character waits for its last byte
    model.dispose();
  });

  it('an aborted signal stops generation before the next token', async () => {
    const { checkpoint } = memoryCheckpoint(GQA);
    const model = await LlamaModel.create(checkpoint, { matmul: 'js' });
    const cache = new FullKVCache({ spec: model.spec, dtype: 'f32' });
    const stop = new AbortController();
    const got: number[] = [];
    for await (const t of generate(model, cache, [1, 2, 3], { maxNewTokens: 50, signal: stop.signal })) {
      got.push(t.id);
      if (got.length === 3) stop.abort();
    }
    expect(got).toHaveLength(3);
  });
});

describe('with the shadowkv policy', () => {
  it('a 700-token prompt: prefill logits equal full attention (prefill is exact), then decode runs compressed', async () => {
    const config = { ...GQA, vocabSize: 256, layers: 2 };
    const { checkpoint } = memoryCheckpoint(config, { seed: 8, dtype: 'bf16' });
    const model = await LlamaModel.create(checkpoint);
    const prompt = tokens(700, 256, 5);
    const fit = fitCacheOptions(model.spec, { promptTokens: prompt.length, maxNewTokens: 8 });
    const options = { ...fit.options, denseThreshold: 256 }; // the fitted threshold (1024) would keep this short prompt dense
    const shadow = new ShadowKVCache({ spec: model.spec, dtype: 'f32', maxTokens: fit.maxTokens, ...options });
    const full = new FullKVCache({ spec: model.spec, dtype: 'f32' });
    const a = model.prefill(prompt, shadow, { chunkTokens: 256 });
    const b = model.prefill(prompt, full, { chunkTokens: 256 });
    expect(maxRelDiff(a, Float64Array.from(b))).toBeLessThan(LOGIT_TOLERANCE);
    let next = argmax(a);
    for (let i = 0; i < 8; i++) {
      const logits = model.forward([next], shadow);
      expect(logits.every(Number.isFinite)).toBe(true);
      next = argmax(logits);
    }
    expect(shadow.stats().compressions).toBe(config.layers);
    expect(shadow.length()).toBe(708);
    expect(shadow.memory().host).toBeGreaterThan(0); // values offloaded: the rows really were compressed
    shadow.dispose();
    full.dispose();
    model.dispose();
  });
});
