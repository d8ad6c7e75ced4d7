import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { DType } from '../../packages/shadowkv/src/backend.js';
import {
  CheckpointError, checkpointFiles, encodeSafetensors, hfConfigJson, loadCheckpoint, parseLlamaConfig, randomWeights, readCheckpoint, writeCheckpoint,
  type CheckpointProblem,
} from '../../packages/llama/src/index.js';
import { GQA, MHA, memoryCheckpoint } from './fixtures.js';

function caught(f: () => unknown): unknown {
  try {
    f();
  } catch (err) {
    return err;
  }
  return undefined;
}

const bytesOf = (t: { data: ArrayBufferView }) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);

describe('loader round trips', () => {
  const cases: [string, typeof GQA, DType, number, 'rope_theta' | 'rope_parameters'][] = [
    ['GQA f32 one file', GQA, 'f32', 1, 'rope_theta'],
    ['GQA bf16 three shards, rope_parameters', GQA, 'bf16', 3, 'rope_parameters'],
    ['MHA tied f16 two shards', MHA, 'f16', 2, 'rope_theta'],
    ['MHA tied bf16 one file, rope_parameters', MHA, 'bf16', 1, 'rope_parameters'],
  ];
  it.each(cases)('%s: config, spec and every weight come back bit for bit', (_, config, dtype, shards, spelling) => {
    const { tensors, files, checkpoint } = memoryCheckpoint(config, { dtype, shards, spelling });
    expect(files.has('model.safetensors.index.json')).toBe(shards > 1);
    expect(checkpoint.files.length).toBe(shards);
    expect(checkpoint.config).toEqual(config);
    expect(checkpoint.spec).toEqual({
      layers: config.layers, queryHeads: config.queryHeads, kvHeads: config.kvHeads, headDim: config.headDim,
      rope: { theta: config.ropeTheta, style: 'half', ...(config.ropeScaling ? { scaling: config.ropeScaling } : {}) },
    });
    const w = checkpoint.weights;
    expect(w.embed.dtype).toBe(dtype);
    expect(bytesOf(w.embed)).toEqual(bytesOf(tensors.get('model.embed_tokens.weight')!));
    expect(bytesOf(w.layers[1]!.proj.down.weight)).toEqual(bytesOf(tensors.get('model.layers.1.mlp.down_proj.weight')!));
    expect(w.layers[0]!.proj.k.weight.shape).toEqual([config.kvHeads * config.headDim, config.hiddenSize]);
    expect(w.lmHead === w.embed).toBe(config.tieWordEmbeddings);
    expect(w.layers[0]!.proj.q.bias?.length).toBe(config.attentionBias ? config.queryHeads * config.headDim : undefined);
  });

  it('reads a folder from disk (loadCheckpoint), sharded', async () => {
    const dir = mkdtempSync(`${tmpdir()}/skv-llama-`);
    const tensors = randomWeights(GQA, { dtype: 'bf16', seed: 3 });
    const written = await writeCheckpoint(dir, GQA, tensors, { shards: 2 });
    expect(written).toContain('model.safetensors.index.json');
    const loaded = await loadCheckpoint(dir);
    expect(loaded.config).toEqual(GQA);
    expect(bytesOf(loaded.weights.lmHead)).toEqual(bytesOf(tensors.get('lm_head.weight')!));
  });

  it('config defaults: MHA without num_key_value_heads, head_dim from hidden / heads, theta 10000, untied', () => {
    const c = parseLlamaConfig({ vocab_size: 10, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 4 });
    expect([c.kvHeads, c.headDim, c.ropeTheta, c.tieWordEmbeddings, c.ropeScaling]).toEqual([4, 8, 10000, false, undefined]);
  });

  it('both spellings of Llama-3 scaling give the same config', () => {
    const scaled = { ...GQA, ropeTheta: 500000 };
    const v4 = hfConfigJson(scaled, 'rope_theta');
    const v5 = hfConfigJson(scaled, 'rope_parameters');
    expect(v4.rope_scaling).toMatchObject({ rope_type: 'llama3', factor: 8 });
    expect(v5.rope_theta).toBeUndefined();
    expect(parseLlamaConfig(v4)).toEqual(scaled);
    expect(parseLlamaConfig(v5)).toEqual(scaled);
    // The older `type` key of rope_scaling is read too.
    expect(parseLlamaConfig({ ...v4, rope_scaling: { ...(v4.rope_scaling as object), rope_type: undefined, type: 'llama3' } }).ropeScaling).toEqual(GQA.ropeScaling);
  });

  it("a checkpoint's cache hints (config.json shadowkv) are read, written back, and checked", () => {
    const hinted = { ...GQA, cacheHints: { chunkSize: 1 } };
    const json = hfConfigJson(hinted);
    expect(json.shadowkv).toEqual({ chunk_size: 1 });
    expect(parseLlamaConfig(json)).toEqual(hinted);
    expect(parseLlamaConfig(hfConfigJson(GQA)).cacheHints).toBeUndefined();
    for (const shadowkv of [1, 'x', [1], { chunk_size: 0 }, { chunk_size: 2.5 }, { chunk_size: 4096 }]) {
      expect(() => parseLlamaConfig({ ...json, shadowkv })).toThrow(CheckpointError);
      expect(() => parseLlamaConfig({ ...json, shadowkv })).toThrow(/shadowkv/);
    }
  });

  it('any JSON in config.json shadowkv: a hint read exactly as written, or a CheckpointError naming it, nothing else', () => {
    const json = hfConfigJson(GQA);
    const hint = fc.oneof(fc.jsonValue(), fc.record({ chunk_size: fc.oneof(fc.jsonValue(), fc.integer({ min: -5, max: 2000 }), fc.double()) }, { requiredKeys: [] }));
    fc.assert(
      fc.property(hint, (shadowkv) => {
        let config;
        try {
          config = parseLlamaConfig({ ...json, shadowkv });
        } catch (err) {
          return err instanceof CheckpointError && /shadowkv/.test((err as Error).message);
        }
        const size = (shadowkv as { chunk_size?: unknown } | null)?.chunk_size;
        if (shadowkv === null || shadowkv === undefined) return config.cacheHints === undefined;
        return size === undefined ? config.cacheHints?.chunkSize === undefined : config.cacheHints?.chunkSize === size;
      }),
      { numRuns: 300 },
    );
  });
});

describe('a checkpoint that cannot be loaded is a CheckpointError naming the problem', () => {
  const good = () => {
    const tensors = randomWeights(GQA, { seed: 2 });
    return { tensors, files: checkpointFiles(GQA, tensors) };
  };
  const load = (files: Map<string, Uint8Array>) => () => readCheckpoint((name) => files.get(name));
  const withFile = (name: string, bytes: Uint8Array | undefined) => {
    const { files } = good();
    if (bytes) files.set(name, bytes);
    else files.delete(name);
    return files;
  };
  const model = () => good().files.get('model.safetensors')!;
  const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  const header = (h: unknown, data = new Uint8Array(0)) => {
    const head = json(h);
    const out = new Uint8Array(8 + head.length + data.length);
    new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
    out.set(head, 8);
    out.set(data, 8 + head.length);
    return out;
  };
  const withTensors = (edit: (t: ReturnType<typeof randomWeights>) => void) => {
    const { tensors } = good();
    edit(tensors);
    return withFile('model.safetensors', encodeSafetensors(tensors));
  };
  const cfg = (edit: Record<string, unknown>) => withFile('config.json', json({ ...hfConfigJson(GQA), ...edit }));

  const cases: [string, () => Map<string, Uint8Array>, CheckpointProblem, RegExp][] = [
    ['a file cut short in the data', () => withFile('model.safetensors', model().subarray(0, model().length - 5)), 'truncated', /cut short/],
    ['a file cut short in the header', () => withFile('model.safetensors', model().subarray(0, 100)), 'truncated', /header needs/],
    ['a file of 3 bytes', () => withFile('model.safetensors', new Uint8Array(3)), 'truncated', /shorter than the 8-byte/],
    ['a header that is not JSON', () => withFile('model.safetensors', header('x').map((b, i) => (i === 8 ? 0x7b : b))), 'header', /not UTF-8 JSON/],
    ['an implausible header length', () => withFile('model.safetensors', Uint8Array.of(255, 255, 255, 255, 255, 255, 0, 0, 1)), 'header', /not plausible/],
    ['a byte span that disagrees with dtype x shape', () => withFile('model.safetensors', header({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, new Uint8Array(8))), 'header', /needs 8 bytes, its data_offsets span 4/],
    ['an unknown dtype tag', () => withFile('model.safetensors', header({ a: { dtype: 'F31', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4))), 'header', /not a safetensors dtype/],
    ['a weight stored as I32', () => {
      // encodeSafetensors writes float tags only: retag one tensor in the header (same length, same offsets).
      const bytes = Buffer.from(model());
      const at = bytes.indexOf('"model.norm.weight":{"dtype":"F32"');
      bytes.write('I', at + '"model.norm.weight":{"dtype":"'.length);
      return withFile('model.safetensors', bytes);
    }, 'dtype', /'model.norm.weight' is I32; weights must be F32, F16 or BF16/],
    ['a missing tensor', () => withTensors((t) => t.delete('model.layers.1.self_attn.v_proj.weight')), 'missing-tensor', /'model.layers.1.self_attn.v_proj.weight' is not in model.safetensors/],
    ['an untied model without lm_head', () => withTensors((t) => t.delete('lm_head.weight')), 'missing-tensor', /tie_word_embeddings false/],
    ['a weight of the wrong shape', () => withTensors((t) => t.set('model.layers.0.mlp.up_proj.weight', { data: new Float32Array(72 * 47), shape: [72, 47], dtype: 'f32' })), 'shape', /\[72, 47\], but config.json implies \[72, 48\]/],
    ['no config.json', () => withFile('config.json', undefined), 'io', /config.json is missing/],
    ['no safetensors file', () => withFile('model.safetensors', undefined), 'io', /neither model.safetensors/],
    ['config.json that is not JSON', () => withFile('config.json', json('{').subarray(1)), 'config', /not JSON/],
    ['config.json without hidden_size', () => cfg({ hidden_size: undefined }), 'config', /hidden_size must be a positive integer/],
    ['heads that do not divide', () => cfg({ num_key_value_heads: 4 }), 'config', /multiple of num_key_value_heads/],
    ['YaRN RoPE', () => cfg({ rope_scaling: { rope_type: 'yarn', factor: 4 } }), 'config', /rope type 'yarn' is not supported/],
    ['llama3 RoPE without its factors', () => cfg({ rope_scaling: { rope_type: 'llama3', factor: 8 } }), 'config', /low_freq_factor/],
    ['a GELU model', () => cfg({ hidden_act: 'gelu' }), 'config', /hidden_act 'gelu'/],
  ];
  it.each(cases)('%s', (_, files, problem, message) => {
    const err = caught(load(files()));
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as CheckpointError).code).toBe('SKV_CHECKPOINT');
    expect((err as CheckpointError).problem).toBe(problem);
    expect((err as Error).message).toMatch(message);
  });

  describe('sharded', () => {
    const sharded = () => checkpointFiles(GQA, randomWeights(GQA), { shards: 2 });
    it.each([
      ['a shard the index names is missing', (f: Map<string, Uint8Array>) => f.delete('model-00002-of-00002.safetensors'), 'io', /model-00002-of-00002.safetensors, named by/],
      ['the index points outside the folder', (f: Map<string, Uint8Array>) => f.set('model.safetensors.index.json', new TextEncoder().encode(JSON.stringify({ weight_map: { 'model.norm.weight': '../x.safetensors' } }))), 'header', /not a file name/],
      ['a tensor the index does not list', (f: Map<string, Uint8Array>) => {
        const index = JSON.parse(new TextDecoder().decode(f.get('model.safetensors.index.json')!));
        delete index.weight_map['model.norm.weight'];
        f.set('model.safetensors.index.json', new TextEncoder().encode(JSON.stringify(index)));
      }, 'missing-tensor', /'model.norm.weight' is not in model.safetensors.index.json/],
    ] as [string, (f: Map<string, Uint8Array>) => void, CheckpointProblem, RegExp][])('%s', (_, edit, problem, message) => {
      const files = sharded();
      edit(files);
      const err = caught(() => readCheckpoint((n) => files.get(n)));
      expect(err).toBeInstanceOf(CheckpointError);
      expect((err as CheckpointError).problem).toBe(problem);
      expect((err as Error).message).toMatch(message);
    });
  });
});
