// Reads a Hugging Face checkpoint folder: config.json, then model.safetensors or the shards that
// model.safetensors.index.json names.
import { fmt } from '../../../shadowkv/src/policies/validate.js';
import type { ModelSpec } from '../../../shadowkv/src/spec.js';
import type { Tensor } from '../../../shadowkv/src/tensor.js';
import { CheckpointError } from '../errors/CheckpointError.js';
import { llamaSpec, parseLlamaConfig, type LlamaConfig } from './LlamaConfig.js';
import { assembleWeights, type LlamaWeights } from './LlamaWeights.js';
import { fileSource } from './fileSource.js';
import { readSafetensors, weightTensor, type ByteSource, type RawTensor } from './safetensors.js';
import { weightSlots } from './weightLayout.js';

/** A loaded checkpoint: the config, the cache's spec for it, and the weights (views into the files' bytes where they were given whole). */
export interface Checkpoint {
  config: LlamaConfig;
  spec: ModelSpec;
  weights: LlamaWeights;
  /** The safetensors files read, in order. */
  files: string[];
}

/**
 * Returns a file of the checkpoint by its name, or undefined when there is no such file: its bytes, or
 * a `ByteSource` that reads ranges of it (safetensors files are then read a header and a tensor at a time).
 */
export type CheckpointReader = (file: string) => Uint8Array | ByteSource | undefined;

const INDEX = 'model.safetensors.index.json';
const SINGLE = 'model.safetensors';

/** How errors name a checkpoint's file: its path where the files are a folder's, else its name. */
type FileName = (file: string) => string;

function readJson(read: CheckpointReader, file: string, problem: 'config' | 'header', name: FileName): unknown {
  const found = read(file);
  if (!found) throw new CheckpointError('io', `${name(file)} is missing`);
  const bytes = found instanceof Uint8Array ? found : found.read(0, found.size);
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new CheckpointError(problem, `${name(file)} is not JSON (${(err as Error).message})`);
  }
}

/** The index's tensor -> shard map; shard names must be plain file names (no path may leave the folder). */
function readIndex(read: CheckpointReader, name: FileName): Map<string, string> {
  const index = readJson(read, INDEX, 'header', name) as { weight_map?: unknown } | null;
  const map = index?.weight_map;
  if (map === null || typeof map !== 'object' || Array.isArray(map)) throw new CheckpointError('header', `${name(INDEX)} has no weight_map object`);
  const entries = Object.entries(map);
  for (const [tensor, file] of entries) {
    if (typeof file !== 'string' || !/^[\w.-]+$/.test(file) || file.startsWith('.')) throw new CheckpointError('header', `${name(INDEX)}: tensor '${tensor}' maps to ${JSON.stringify(file)}, not a file name in the folder`);
  }
  return new Map(entries as [string, string][]);
}

/**
 * Loads a checkpoint through `read` (any storage: a folder, a browser's fetched files, a test's map).
 * Every problem is a `CheckpointError` whose `problem` says which kind, naming the file as `name` gives
 * it (`loadCheckpoint`: its path; by default the file's name).
 */
export function readCheckpoint(read: CheckpointReader, name: FileName = (file) => file): Checkpoint {
  const configFile = name('config.json');
  const config = parseLlamaConfig(readJson(read, 'config.json', 'config', name), configFile);
  const sharded = read(INDEX) !== undefined;
  const index = sharded ? readIndex(read, name) : undefined;
  const files = index ? [...new Set(index.values())] : [SINGLE];
  const parsed = new Map<string, Map<string, RawTensor>>();
  for (const file of files) {
    const bytes = read(file);
    if (!bytes) throw new CheckpointError('io', sharded ? `${name(file)}, named by ${name(INDEX)}, is missing` : `neither ${name(SINGLE)} nor ${name(INDEX)} exists`);
    parsed.set(file, readSafetensors(bytes, name(file)));
  }
  const find = (tensor: string): Tensor | string => {
    const file = index ? index.get(tensor) : SINGLE;
    if (file === undefined) return `is not in ${name(INDEX)}'s weight_map`;
    const raw = parsed.get(file)!.get(tensor);
    return raw ? weightTensor(raw, name(file)) : `is not in ${name(file)}`;
  };
  const weights = assembleWeights(config, find, configFile);
  checkUnread(config, parsed, name, configFile);
  return { config, spec: llamaSpec(config), weights, files };
}

/**
 * Throws a CheckpointError ('config') for a decoder-layer tensor the config does not read: a layer past
 * `num_hidden_layers`, a bias where `attention_bias` or `mlp_bias` is false. Skipped, they would load a
 * model other than the checkpoint's (its first layers only, projections without their biases) that runs
 * without an error. Tensors outside the layers (an unused `lm_head.weight` of a tied model) and
 * `rotary_emb.inv_freq` buffers (older exports save them; RoPE comes from the config) are left alone.
 */
function checkUnread(config: LlamaConfig, parsed: Map<string, Map<string, RawTensor>>, name: FileName, configFile: string): void {
  const read = new Set(weightSlots(config).map((slot) => slot.name));
  for (const [file, tensors] of parsed) {
    for (const tensor of tensors.keys()) {
      if (!tensor.startsWith('model.layers.') || read.has(tensor) || tensor.endsWith('.rotary_emb.inv_freq')) continue;
      const what = `num_hidden_layers ${config.layers}, attention_bias ${config.attentionBias}, mlp_bias ${config.mlpBias}`;
      throw new CheckpointError('config', `${name(file)} holds tensor '${tensor}', which ${configFile} (${what}) does not read; the config does not describe these weights`);
    }
  }
}

/**
 * Loads a checkpoint folder (Node): `config.json` and `model.safetensors`, or the shards of `model.safetensors.index.json`.
 * @example
 * const { config, spec, weights } = await loadCheckpoint('./my-llama');
 */
export async function loadCheckpoint(dir: string): Promise<Checkpoint> {
  // NOTE: left to node:path, what is not a path is a TypeError, not a CheckpointError.
  if (typeof dir !== 'string') throw new CheckpointError('io', `loadCheckpoint: dir must be the path of a checkpoint folder, got ${fmt(dir)}`);
  const fs = await import('node:fs');
  const { join } = await import('node:path');
  const open: number[] = [];
  try {
    const path = (file: string) => join(dir, file);
    const read = (file: string) => {
      try {
        open.push(fs.openSync(path(file), 'r'));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw new CheckpointError('io', `${path(file)}: ${(err as Error).message}`);
      }
      return fileSource(fs, open.at(-1)!, path(file));
    };
    return readCheckpoint(read, path);
  } finally {
    // NOTE: every weight has been read by now (assembleWeights reads each tensor it keeps).
    for (const fd of open) fs.closeSync(fd);
  }
}
