import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
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

/** A safetensors file of this header (any JSON) and data. */
function header(h: unknown, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const head = new TextEncoder().encode(JSON.stringify(h));
  const out = new Uint8Array(8 + head.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  out.set(data, 8 + head.length);
  return out;
}

/** A safetensors file with its header rewritten by `edit`, the data unchanged. */
function rewriteHeader(file: Uint8Array, edit: (h: Record<string, { data_offsets: number[] }>) => unknown): Uint8Array {
  const n = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  return header(edit(JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + n)))), file.subarray(8 + n));
}

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
    // The byte ranges must tile the data (huggingface/safetensors Metadata::validate): no shared bytes, no holes, nothing after.
    ['two tensors on the same bytes', () => withFile('model.safetensors', rewriteHeader(model(), (h) => ({ ...h, 'model.layers.1.self_attn.k_proj.weight': { ...h['model.layers.1.self_attn.k_proj.weight'], data_offsets: h['model.layers.1.self_attn.v_proj.weight']!.data_offsets } }))), 'header', /their bytes overlap; safetensors tensors tile the data/],
    ['a tensor reaching into the next one', () => withFile('model.safetensors', header({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8))), 'header', /tensor 'b' begins at byte 4 of the data, but 'a' ends at 8: their bytes overlap/],
    ['bytes between two tensors', () => withFile('model.safetensors', header({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, new Uint8Array(12))), 'header', /'b' begins at byte 8 of the data, but 'a' ends at 4: the bytes between belong to no tensor/],
    ['bytes before the first tensor', () => withFile('model.safetensors', header({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8))), 'header', /'a' begins at byte 4 of the data, but the data begins at 0/],
    ['bytes after the last tensor', () => withFile('model.safetensors', (() => { const m = model(); const out = new Uint8Array(m.length + 3); out.set(m); return out; })()), 'header', /3 bytes follow the last tensor's end/],
  ];
  it.each(cases)('%s', (_, files, problem, message) => {
    const err = caught(load(files()));
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as CheckpointError).code).toBe('SKV_CHECKPOINT');
    expect((err as CheckpointError).problem).toBe(problem);
    expect((err as Error).message).toMatch(message);
  });

  /** The error of loadCheckpoint on a folder holding `files`, and the folder. */
  async function fromFolder(files: Map<string, Uint8Array>): Promise<[unknown, string]> {
    const dir = mkdtempSync(`${tmpdir()}/skv-llama-bad-`);
    try {
      for (const [name, bytes] of files) writeFileSync(`${dir}/${name}`, bytes);
      return [await loadCheckpoint(dir).then(() => undefined, (err: unknown) => err), dir];
    } finally {
      rmSync(dir, { recursive: true });
    }
  }

  // The same problems in a folder: the same messages, each naming the file it is about by its path.
  it.each(cases)('from a folder, %s names the file by its path', async (_, files, problem, message) => {
    const [err, dir] = await fromFolder(files());
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as CheckpointError).problem).toBe(problem);
    expect((err as Error).message).toMatch(new RegExp(`${dir}/(config\\.json|model\\.safetensors)\\b`));
    expect((err as Error).message.replaceAll(`${dir}/`, '')).toMatch(message);
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
    ] as [string, (f: Map<string, Uint8Array>) => void, CheckpointProblem, RegExp][])('%s', async (_, edit, problem, message) => {
      const files = sharded();
      edit(files);
      const err = caught(() => readCheckpoint((n) => files.get(n)));
      expect(err).toBeInstanceOf(CheckpointError);
      expect((err as CheckpointError).problem).toBe(problem);
      expect((err as Error).message).toMatch(message);
      const [inFolder, dir] = await fromFolder(files);
      expect((inFolder as CheckpointError).problem).toBe(problem);
      expect((inFolder as Error).message).toMatch(new RegExp(`${dir}/model`));
    });
  });
});

describe('safetensors files are read a header and a tensor at a time', () => {
  it('tensors stored past 4 GiB of a sparse shard load bit for bit (loadCheckpoint reads byte ranges, not whole files)', async () => {
    // NOTE: a sparse file: the 4 GiB of padding take no disk; only the header and the weights are written.
    const dir = mkdtempSync(`${tmpdir()}/skv-llama-big-`);
    try {
      const tensors = randomWeights(GQA, { dtype: 'bf16', seed: 4 });
      const pad = 2 ** 32 + 8; // past Buffer's 4 GiB as well as readFileSync's 2 GiB
      const head: Record<string, unknown> = { pad: { dtype: 'U8', shape: [pad], data_offsets: [0, pad] } };
      let end = pad;
      for (const [name, t] of tensors) head[name] = { dtype: 'BF16', shape: t.shape, data_offsets: [end, (end += t.data.byteLength)] };
      const json = Buffer.from(JSON.stringify(head).padEnd(8 * Math.ceil(JSON.stringify(head).length / 8)));
      const fd = openSync(`${dir}/model.safetensors`, 'w');
      const length = Buffer.alloc(8);
      length.writeBigUInt64LE(BigInt(json.length));
      writeSync(fd, length, 0, 8, 0);
      writeSync(fd, json, 0, json.length, 8);
      let at = 8 + json.length + pad;
      for (const t of tensors.values()) at += writeSync(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), 0, t.data.byteLength, at);
      ftruncateSync(fd, at);
      closeSync(fd);
      writeFileSync(`${dir}/config.json`, JSON.stringify(hfConfigJson(GQA)));
      expect(statSync(`${dir}/model.safetensors`).size).toBeGreaterThan(2 ** 32);
      const loaded = await loadCheckpoint(dir);
      expect(loaded.config).toEqual(GQA);
      expect(bytesOf(loaded.weights.embed)).toEqual(bytesOf(tensors.get('model.embed_tokens.weight')!));
      expect(bytesOf(loaded.weights.layers[1]!.proj.down.weight)).toEqual(bytesOf(tensors.get('model.layers.1.mlp.down_proj.weight')!));
      expect(bytesOf(loaded.weights.lmHead)).toEqual(bytesOf(tensors.get('lm_head.weight')!));
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  it('a header may list tensors in any order: only their byte ranges must tile the data', () => {
    const tensors = randomWeights(GQA, { seed: 5 });
    const file = checkpointFiles(GQA, tensors).get('model.safetensors')!;
    const reversed = rewriteHeader(file, (h) => Object.fromEntries(Object.entries(h).reverse()));
    const files = new Map([['config.json', new TextEncoder().encode(JSON.stringify(hfConfigJson(GQA)))], ['model.safetensors', reversed]]);
    const { weights } = readCheckpoint((f) => files.get(f));
    expect(bytesOf(weights.layers[0]!.proj.q.weight)).toEqual(bytesOf(tensors.get('model.layers.0.self_attn.q_proj.weight')!));
  });
});

describe('config.json: a field of the wrong kind is a CheckpointError naming it, never its default', () => {
  const base = hfConfigJson(GQA);
  const read = (edit: Record<string, unknown>) => () => parseLlamaConfig({ ...base, ...edit });
  it.each([
    ['rope_scaling a string', { rope_scaling: 'llama3' }, /rope_scaling must be an object, got "llama3"/],
    ['rope_scaling a list', { rope_scaling: [8, 1, 4, 8192] }, /rope_scaling must be an object/],
    ['rope_scaling a number', { rope_scaling: 8 }, /rope_scaling must be an object/],
    ['rope_parameters a number', { rope_theta: undefined, rope_parameters: 500000 }, /rope_parameters must be an object/],
    ['rope_parameters a string', { rope_theta: undefined, rope_parameters: 'llama3' }, /rope_parameters must be an object/],
    ['tie_word_embeddings "true"', { tie_word_embeddings: 'true' }, /tie_word_embeddings must be true or false, got "true"/],
    ['attention_bias 1', { attention_bias: 1 }, /attention_bias must be true or false/],
    ['mlp_bias "false"', { mlp_bias: 'false' }, /mlp_bias must be true or false/],
    ['eos_token_id past the vocabulary', { eos_token_id: 100000 }, /eos_token_id .* in \[0, vocab_size = 61\), got 100000/],
    ['one eos id of a list past the vocabulary', { eos_token_id: [1, 61] }, /eos_token_id/],
    ['bos_token_id past the vocabulary', { bos_token_id: 61 }, /bos_token_id must be a token id in \[0, vocab_size = 61\)/],
    ['bos_token_id a string', { bos_token_id: '1' }, /bos_token_id/],
  ])('%s', (_, edit, message) => {
    expect(read(edit)).toThrow(CheckpointError);
    expect(read(edit)).toThrow(message);
  });

  it('absent or null fields take their defaults; ids in the vocabulary are read', () => {
    const c = parseLlamaConfig({ ...base, rope_scaling: null, tie_word_embeddings: null, attention_bias: undefined, bos_token_id: null, eos_token_id: [60, 0] });
    expect([c.ropeScaling, c.tieWordEmbeddings, c.attentionBias, c.bosTokenId, c.eosTokenIds]).toEqual([undefined, false, false, undefined, [60, 0]]);
  });

  it('any JSON in a flag, a RoPE field or a special id: read as written, or a CheckpointError naming the field', () => {
    const field = fc.constantFrom('tie_word_embeddings', 'attention_bias', 'mlp_bias', 'rope_scaling', 'rope_parameters', 'eos_token_id', 'bos_token_id');
    fc.assert(
      fc.property(field, fc.oneof(fc.jsonValue(), fc.integer({ min: -2, max: 70 }), fc.boolean()), (key, value) => {
        let c;
        try {
          c = parseLlamaConfig({ ...base, ...(key === 'rope_parameters' ? { rope_theta: undefined } : {}), [key]: value });
        } catch (err) {
          return err instanceof CheckpointError && err.problem === 'config' && (err.message.includes(key) || /rope|factor|theta/.test(err.message));
        }
        const absent = value === null || value === undefined;
        const id = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) < GQA.vocabSize;
        switch (key) {
          case 'tie_word_embeddings': return c.tieWordEmbeddings === (absent ? false : value);
          case 'attention_bias': return c.attentionBias === (absent ? false : value);
          case 'mlp_bias': return c.mlpBias === (absent ? false : value);
          case 'bos_token_id': return absent ? c.bosTokenId === undefined : id(value) && c.bosTokenId === value;
          case 'eos_token_id': return JSON.stringify(c.eosTokenIds) === JSON.stringify(absent ? [] : Array.isArray(value) ? value : [value]) && c.eosTokenIds.every(id);
          default: return absent || (typeof value === 'object' && !Array.isArray(value));
        }
      }),
      { numRuns: 400 },
    );
  });
});
