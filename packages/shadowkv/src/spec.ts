import { checkKeys, fmt } from './config.js';
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

/**
 * Limits of a spec: sizes the runtimes can address (32-bit element counts, a Gram matrix of the
 * key width squared) and numbers that keep RoPE angles and attention logits finite.
 */
export const SPEC_LIMITS = { layers: 1024, queryHeads: 1024, kvHeads: 1024, headDim: 1024, keyWidth: 16384, theta: 1e12, scale: [1e-8, 100] } as const;

const intIn = (v: unknown, min: number, max: number): v is number => Number.isInteger(v) && (v as number) >= min && (v as number) <= max;
const numIn = (v: unknown, min: number, max: number): v is number => typeof v === 'number' && v >= min && v <= max;

/** Checks a spec and returns it with defaults filled in. Throws `ConfigError` naming the field. */
export function resolveSpec(spec: ModelSpec): Required<Omit<ModelSpec, 'rope'>> & { rope: Required<Omit<RopeSpec, 'scaling'>> & Pick<RopeSpec, 'scaling'> } {
  // NOTE: a misspelt field (rope.styel, scal) would otherwise leave its default in force: silently other attention.
  checkKeys('spec', spec, ['layers', 'queryHeads', 'kvHeads', 'headDim', 'rope', 'scale']);
  for (const key of ['layers', 'queryHeads', 'kvHeads', 'headDim'] as const) {
    if (!intIn(spec[key], 1, SPEC_LIMITS[key])) throw new ConfigError(`spec.${key} must be an integer in [1, ${SPEC_LIMITS[key]}], got ${fmt(spec[key])}`);
  }
  if (spec.queryHeads % spec.kvHeads !== 0) {
    throw new ConfigError(`spec.queryHeads (${spec.queryHeads}) must be a multiple of spec.kvHeads (${spec.kvHeads})`);
  }
  if (spec.headDim % 2 !== 0) throw new ConfigError(`spec.headDim must be even for RoPE, got ${spec.headDim}`);
  if (spec.kvHeads * spec.headDim > SPEC_LIMITS.keyWidth) {
    throw new ConfigError(`spec.kvHeads * spec.headDim (the key width) must be at most ${SPEC_LIMITS.keyWidth}, got ${spec.kvHeads * spec.headDim}`);
  }
  const rope = spec.rope;
  if (rope !== null && typeof rope === 'object') checkKeys('spec.rope', rope, ['theta', 'style', 'scaling']);
  if (!(rope && numIn(rope.theta, Number.MIN_VALUE, SPEC_LIMITS.theta))) throw new ConfigError(`spec.rope.theta must be a number in (0, ${SPEC_LIMITS.theta}], got ${fmt(rope?.theta)}`);
  const style = rope.style === undefined ? 'half' : rope.style;
  if (style !== 'half' && style !== 'interleaved') throw new ConfigError(`spec.rope.style must be 'half' or 'interleaved', got ${fmt(style)}`);
  const s = rope.scaling;
  if (s !== undefined) {
    if (s !== null && typeof s === 'object') checkKeys('spec.rope.scaling', s, ['factor', 'lowFreqFactor', 'highFreqFactor', 'originalMaxPositions']);
    const ok = s !== null && typeof s === 'object' && numIn(s.factor, 1e-3, 1e6) && numIn(s.lowFreqFactor, 1e-6, 1e6) && numIn(s.highFreqFactor, 1e-6, 1e6) &&
      s.highFreqFactor > s.lowFreqFactor && intIn(s.originalMaxPositions, 1, 2 ** 31 - 1);
    if (!ok) throw new ConfigError('spec.rope.scaling needs factor in [1e-3, 1e6], 0 < lowFreqFactor < highFreqFactor <= 1e6, originalMaxPositions an integer >= 1');
  }
  const scale = spec.scale === undefined ? 1 / Math.sqrt(spec.headDim) : spec.scale;
  const [lo, hi] = SPEC_LIMITS.scale;
  if (!numIn(scale, lo, hi)) throw new ConfigError(`spec.scale must be a number in [${lo}, ${hi}], got ${fmt(spec.scale)}`);
  const resolved = { ...spec, rope: { theta: rope.theta, style, scaling: s }, scale };
  if (!ropeFrequencies(spec.headDim, resolved.rope).every((f) => f > 0 && Number.isFinite(f))) {
    throw new ConfigError(`spec.rope gives RoPE frequencies that are not positive and finite (theta ${rope.theta}, scaling ${JSON.stringify(s)})`);
  }
  return resolved;
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
