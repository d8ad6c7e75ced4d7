// The tensor names and shapes of a Hugging Face LlamaForCausalLM state dict, from its config.
import type { LlamaConfig } from './LlamaConfig.js';

/** A weight the config implies: its HF name and shape. */
export interface WeightSlot {
  name: string;
  shape: number[];
}

/** The projections of one decoder layer, in HF's names (`self_attn.q_proj`, `mlp.gate_proj`, …). */
export const PROJECTIONS = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const;
export type Projection = (typeof PROJECTIONS)[number];

/** `[out, in]` of a projection (HF `nn.Linear` stores the weight transposed: out rows of in columns). */
export function projectionShape(c: LlamaConfig, p: Projection): [number, number] {
  const q = c.queryHeads * c.headDim;
  const kv = c.kvHeads * c.headDim;
  const shapes: Record<Projection, [number, number]> = {
    q: [q, c.hiddenSize], k: [kv, c.hiddenSize], v: [kv, c.hiddenSize], o: [c.hiddenSize, q],
    gate: [c.intermediateSize, c.hiddenSize], up: [c.intermediateSize, c.hiddenSize], down: [c.hiddenSize, c.intermediateSize],
  };
  return shapes[p];
}

/** HF module path of a projection in layer `i`. */
export function projectionName(i: number, p: Projection): string {
  return `model.layers.${i}.${p === 'gate' || p === 'up' || p === 'down' ? 'mlp' : 'self_attn'}.${p}_proj`;
}

/** Whether a projection carries a bias under this config. */
export function hasBias(c: LlamaConfig, p: Projection): boolean {
  return p === 'gate' || p === 'up' || p === 'down' ? c.mlpBias : c.attentionBias;
}

/** Every tensor the forward pass reads, in state-dict order; `lm_head.weight` only when untied. */
export function weightSlots(c: LlamaConfig): WeightSlot[] {
  const slots: WeightSlot[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocabSize, c.hiddenSize] }];
  for (let i = 0; i < c.layers; i++) {
    slots.push({ name: `model.layers.${i}.input_layernorm.weight`, shape: [c.hiddenSize] });
    for (const p of PROJECTIONS) {
      const shape = projectionShape(c, p);
      slots.push({ name: `${projectionName(i, p)}.weight`, shape });
      if (hasBias(c, p)) slots.push({ name: `${projectionName(i, p)}.bias`, shape: [shape[0]] });
      if (p === 'o') slots.push({ name: `model.layers.${i}.post_attention_layernorm.weight`, shape: [c.hiddenSize] });
    }
  }
  slots.push({ name: 'model.norm.weight', shape: [c.hiddenSize] });
  if (!c.tieWordEmbeddings) slots.push({ name: 'lm_head.weight', shape: [c.vocabSize, c.hiddenSize] });
  return slots;
}
