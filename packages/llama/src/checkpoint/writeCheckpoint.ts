// Writes checkpoints in the Hugging Face layout: the tests and examples make their own models with it.
import { checkKeys } from '../../../shadowkv/src/config.js';
import { fromNumbers } from '../../../shadowkv/src/dtype.js';
import { ConfigError } from '../../../shadowkv/src/errors/ConfigError.js';
import { fmt } from '../../../shadowkv/src/policies/validate.js';
import type { DType, Tensor } from '../../../shadowkv/src/tensor.js';
import { checkSeed, Rng } from '../generate/Rng.js';
import { hfConfigJson, type LlamaConfig, type RopeSpelling } from './LlamaConfig.js';
import { encodeSafetensors } from './safetensors.js';
import { weightSlots } from './weightLayout.js';

/** How `checkpointFiles` lays a checkpoint out. */
export interface CheckpointLayout {
  /**
   * Safetensors files the tensors are split over.
   * - default: `1` (`model.safetensors`); more gives `model-0000i-of-0000n.safetensors` and an index
   */
  shards?: number;
  /**
   * RoPE spelling of `config.json`.
   * - default: `'rope_theta'`
   */
  spelling?: RopeSpelling;
}

/** The files of a checkpoint, by name: `config.json`, the safetensors file(s), and the index when sharded. */
export function checkpointFiles(config: LlamaConfig, tensors: ReadonlyMap<string, Tensor>, layout: CheckpointLayout = {}): Map<string, Uint8Array> {
  checkKeys('checkpointFiles layout', layout, ['shards', 'spelling']);
  const { shards = 1, spelling = 'rope_theta' } = layout;
  if (!Number.isInteger(shards) || shards < 1 || shards > tensors.size) throw new ConfigError(`checkpointFiles: shards must be an integer in [1, ${tensors.size}] (one tensor a shard at least), got ${fmt(shards)}`);
  if (spelling !== 'rope_theta' && spelling !== 'rope_parameters') throw new ConfigError(`checkpointFiles: spelling must be 'rope_theta' or 'rope_parameters', got ${fmt(spelling)}`);
  const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v, null, 2));
  const files = new Map<string, Uint8Array>([['config.json', json(hfConfigJson(config, spelling))]]);
  if (shards === 1) return files.set('model.safetensors', encodeSafetensors(tensors));
  const names = [...tensors.keys()];
  const per = Math.ceil(names.length / shards);
  const weightMap: Record<string, string> = {};
  const pad = (i: number) => String(i).padStart(5, '0');
  for (let s = 0; s < shards; s++) {
    const file = `model-${pad(s + 1)}-of-${pad(shards)}.safetensors`;
    const part = new Map(names.slice(s * per, (s + 1) * per).map((n) => [n, tensors.get(n)!]));
    for (const n of part.keys()) weightMap[n] = file;
    files.set(file, encodeSafetensors(part));
  }
  const totalSize = [...tensors.values()].reduce((a, t) => a + t.data.byteLength, 0);
  return files.set('model.safetensors.index.json', json({ metadata: { total_size: totalSize }, weight_map: weightMap }));
}

/** Writes `checkpointFiles` into a folder (Node); returns the file names. */
export async function writeCheckpoint(dir: string, config: LlamaConfig, tensors: ReadonlyMap<string, Tensor>, layout?: CheckpointLayout): Promise<string[]> {
  const { mkdir, writeFile } = await import('node:fs/promises');
  const { join } = await import('node:path');
  await mkdir(dir, { recursive: true });
  const files = checkpointFiles(config, tensors, layout);
  for (const [name, bytes] of files) await writeFile(join(dir, name), bytes);
  return [...files.keys()];
}

/**
 * Random weights for a config, in HF names (a model to test and time the loop with; it knows nothing).
 * Projections are uniform with variance 1/in, so activations keep their scale through the layers;
 * embeddings are unit-variance and norms near 1.
 */
export function randomWeights(config: LlamaConfig, options: { seed?: number; dtype?: DType } = {}): Map<string, Tensor> {
  checkKeys('randomWeights options', options, ['seed', 'dtype']);
  const { seed = 1, dtype = 'f32' } = options;
  checkSeed('randomWeights', seed);
  if (dtype !== 'f32' && dtype !== 'f16' && dtype !== 'bf16') throw new ConfigError(`randomWeights: dtype must be 'f32', 'f16' or 'bf16', got ${fmt(dtype)}`);
  const rng = new Rng(seed);
  const out = new Map<string, Tensor>();
  for (const { name, shape } of weightSlots(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(n);
    const isNorm = name.endsWith('norm.weight');
    const half = name.includes('embed_tokens') ? Math.sqrt(3) : name.endsWith('.bias') ? 0.1 : Math.sqrt(3 / shape[shape.length - 1]!);
    for (let i = 0; i < n; i++) values[i] = (isNorm ? 1 : 0) + (2 * rng.next() - 1) * (isNorm ? 0.1 : half);
    out.set(name, { data: fromNumbers(values, dtype), shape, dtype });
  }
  return out;
}
