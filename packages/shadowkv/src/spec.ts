import { ConfigError } from './errors/ConfigError.js';

/** Llama-3 style frequency scaling of RoPE (`rope_type: "llama3"` in HF configs). */
export interface Llama3RopeScaling {
  /** Divides the low frequencies, e.g. 8. */
  factor: number;
  /** e.g. 1. */
  lowFreqFactor: number;
  /** e.g. 4. */
  highFreqFactor: number;
  /** Context length the model was pre-trained at, e.g. 8192. */
  originalMaxPositions: number;
}

/**
 * How RoPE pairs dims:
 * - `'half'`: dim i with dim i + d/2 (NeoX / Llama `rotate_half`)
 * - `'interleaved'`: dim 2i with dim 2i + 1 (GPT-J, GLM)
 */
export type RopeStyle = 'half' | 'interleaved';

/** Rotary position embedding of a model. */
export interface RopeSpec {
  /** Base of the frequencies (`rope_theta`), e.g. 500000 for Llama-3. */
  theta: number;
  /** How dims pair up (see `RopeStyle`); default `'half'`. */
  style?: RopeStyle;
  /** Optional Llama-3 frequency scaling. */
  scaling?: Llama3RopeScaling;
}

/**
 * The attention geometry of a model, as the cache sees it.
 * @example
 * const llama3_8b: ModelSpec = { layers: 32, queryHeads: 32, kvHeads: 8, headDim: 128, rope: { theta: 500000 } };
 */
export interface ModelSpec {
  layers: number;
  queryHeads: number;
  /** Key/value heads; `queryHeads` must be a multiple (GQA), equal for MHA. */
  kvHeads: number;
  /** Even. */
  headDim: number;
  rope: RopeSpec;
  /** Attention scale; default `1 / sqrt(headDim)`. */
  scale?: number;
}

/** Llama-3-8B's geometry, the paper's default. */
export const LLAMA3_8B: ModelSpec = {
  layers: 32,
  queryHeads: 32,
  kvHeads: 8,
  headDim: 128,
  rope: { theta: 500000, style: 'half', scaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 } },
};

const positiveInt = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0;

/** Checks a spec and returns it with defaults filled in. Throws `ConfigError` naming the field. */
export function resolveSpec(spec: ModelSpec): Required<Omit<ModelSpec, 'rope'>> & { rope: Required<Omit<RopeSpec, 'scaling'>> & Pick<RopeSpec, 'scaling'> } {
  for (const key of ['layers', 'queryHeads', 'kvHeads', 'headDim'] as const) {
    if (!positiveInt(spec?.[key])) throw new ConfigError(`spec.${key} must be a positive integer, got ${String(spec?.[key])}`);
  }
  if (spec.queryHeads % spec.kvHeads !== 0) {
    throw new ConfigError(`spec.queryHeads (${spec.queryHeads}) must be a multiple of spec.kvHeads (${spec.kvHeads})`);
  }
  if (spec.headDim % 2 !== 0) throw new ConfigError(`spec.headDim must be even for RoPE, got ${spec.headDim}`);
  const rope = spec.rope;
  if (!(rope && rope.theta > 0 && Number.isFinite(rope.theta))) throw new ConfigError(`spec.rope.theta must be a positive number, got ${String(rope?.theta)}`);
  const style = rope.style ?? 'half';
  if (style !== 'half' && style !== 'interleaved') throw new ConfigError(`spec.rope.style must be 'half' or 'interleaved', got '${String(style)}'`);
  const s = rope.scaling;
  if (s && !(s.factor > 0 && s.lowFreqFactor > 0 && s.highFreqFactor > s.lowFreqFactor && s.originalMaxPositions > 0)) {
    throw new ConfigError('spec.rope.scaling needs factor > 0, 0 < lowFreqFactor < highFreqFactor, originalMaxPositions > 0');
  }
  const scale = spec.scale ?? 1 / Math.sqrt(spec.headDim);
  if (!(scale > 0 && Number.isFinite(scale))) throw new ConfigError(`spec.scale must be a positive number, got ${String(spec.scale)}`);
  return { ...spec, rope: { theta: rope.theta, style, scaling: s }, scale };
}

/** A spec after `resolveSpec`: defaults filled in, checked. */
export type ResolvedSpec = ReturnType<typeof resolveSpec>;

/**
 * RoPE inverse frequencies `[headDim / 2]` in float64, with Llama-3 scaling when the spec asks for it
 * (follows HF `_compute_llama3_parameters`).
 */
export function ropeFrequencies(headDim: number, rope: RopeSpec): Float64Array {
  const half = headDim / 2;
  const out = new Float64Array(half);
  for (let i = 0; i < half; i++) out[i] = 1 / rope.theta ** ((2 * i) / headDim);
  const s = rope.scaling;
  if (!s) return out;
  const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositions / s.highFreqFactor;
  for (let i = 0; i < half; i++) {
    const wavelen = (2 * Math.PI) / out[i]!;
    if (wavelen < highWavelen) continue; // high frequencies stay
    if (wavelen > lowWavelen) {
      out[i] = out[i]! / s.factor;
      continue;
    }
    const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    out[i] = (1 - smooth) * (out[i]! / s.factor) + smooth * out[i]!;
  }
  return out;
}
