// The weights of a Llama model, grouped the way the forward pass reads them, checked against the config.
import { toFloat32 } from '../../../shadowkv/src/dtype.js';
import type { Tensor } from '../../../shadowkv/src/tensor.js';
import { CheckpointError } from '../errors/CheckpointError.js';
import type { LlamaConfig } from './LlamaConfig.js';
import { hasBias, PROJECTIONS, projectionName, weightSlots, type Projection } from './weightLayout.js';

/** A projection `y = x · weightᵀ + bias`; `weight` is `[out, in]` in its stored dtype. */
export interface Linear {
  weight: Tensor;
  bias?: Float32Array;
}

/** One decoder layer. */
export interface LayerWeights {
  inputNorm: Float32Array; // [hidden]
  postNorm: Float32Array; // [hidden]
  proj: Record<Projection, Linear>;
}

/** Every weight of the model; `lmHead` is `embed` itself when the embeddings are tied. */
export interface LlamaWeights {
  embed: Tensor; // [vocab, hidden]
  layers: LayerWeights[];
  norm: Float32Array; // [hidden]
  lmHead: Tensor; // [vocab, hidden]
}

/** Where a named tensor is: `find` returns it, or undefined with a sentence for the error. */
export type TensorLookup = (name: string) => Tensor | string;

/**
 * Groups the tensors `find` returns into `LlamaWeights`, checking every shape the config implies;
 * `configFile` names the config in those errors (`readCheckpoint` passes its path).
 */
export function assembleWeights(config: LlamaConfig, find: TensorLookup, configFile = 'config.json'): LlamaWeights {
  const got = new Map<string, Tensor>();
  for (const slot of weightSlots(config)) {
    const t = find(slot.name);
    if (typeof t === 'string') throw new CheckpointError('missing-tensor', `tensor '${slot.name}' ${t}${slot.name === 'lm_head.weight' ? ` (${configFile} has tie_word_embeddings false)` : ''}`);
    if (t.shape.length !== slot.shape.length || t.shape.some((n, i) => n !== slot.shape[i])) {
      throw new CheckpointError('shape', `tensor '${slot.name}' is [${t.shape.join(', ')}], but ${configFile} implies [${slot.shape.join(', ')}]`);
    }
    got.set(slot.name, t);
  }
  const tensor = (name: string) => got.get(name)!;
  const vector = (name: string) => toFloat32(tensor(name));
  const layers = Array.from({ length: config.layers }, (_, i): LayerWeights => {
    const linear = (p: Projection): Linear => {
      const base = projectionName(i, p);
      return { weight: tensor(`${base}.weight`), ...(hasBias(config, p) ? { bias: vector(`${base}.bias`) } : {}) };
    };
    return {
      inputNorm: vector(`model.layers.${i}.input_layernorm.weight`),
      postNorm: vector(`model.layers.${i}.post_attention_layernorm.weight`),
      proj: Object.fromEntries(PROJECTIONS.map((p) => [p, linear(p)])) as Record<Projection, Linear>,
    };
  });
  const embed = tensor('model.embed_tokens.weight');
  return { embed, layers, norm: vector('model.norm.weight'), lmHead: config.tieWordEmbeddings ? embed : tensor('lm_head.weight') };
}
