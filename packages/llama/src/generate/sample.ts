import { checkKeys } from '../../../shadowkv/src/config.js';
import { ConfigError } from '../../../shadowkv/src/errors/ConfigError.js';
import { NonFiniteError } from '../../../shadowkv/src/errors/NonFiniteError.js';
import { ShapeError } from '../../../shadowkv/src/errors/ShapeError.js';
import { fmt } from '../../../shadowkv/src/policies/validate.js';
import { checkSeed, Rng } from './Rng.js';

/** How the next token is picked from the logits. */
export interface SamplingOptions {
  /**
   * Softmax temperature.
   * - default: `0`, greedy (the highest logit; ties to the lower id)
   * - `> 0`: sample; below 1 sharpens, above 1 flattens
   */
  temperature?: number;
  /** Keep only the `topK` most likely tokens before sampling. Default `0` (all). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches `topP` (nucleus). Default `1` (all). */
  topP?: number;
  /** Seed of the sampler's generator, an integer in [0, 2^32): the same seed and logits give the same tokens. Default `1`. */
  seed?: number;
}

/** The option names of `SamplingOptions`. */
export const SAMPLING_KEYS = ['temperature', 'topK', 'topP', 'seed'];

/**
 * Throws a ShapeError for no logits and a NonFiniteError for NaN or +Infinity, or when every logit is
 * -Infinity: nothing could be picked. A -Infinity among finite logits is a token masked out.
 */
function checkLogits(call: string, logits: Float32Array): void {
  if (logits === null || typeof logits !== 'object' || !(logits.length > 0)) throw new ShapeError(`${call}: logits must be a non-empty array, got ${fmt(logits)}${logits?.length === 0 ? ' of length 0' : ''}`);
  let finite = false;
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i]!;
    if (Number.isNaN(x) || x === Infinity) throw new NonFiniteError(`${call}: logit ${i} is ${x}; logits must be finite (-Infinity masks a token)`);
    finite ||= x !== -Infinity;
  }
  if (!finite) throw new NonFiniteError(`${call}: every logit is -Infinity, so no token can be picked`);
}

/**
 * Index of the largest logit (the lowest index among ties). No logits are a ShapeError; NaN, +Infinity
 * or only -Infinity a NonFiniteError.
 */
export function argmax(logits: Float32Array): number {
  checkLogits('argmax', logits);
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

/**
 * `options` with their defaults, each checked: a ConfigError naming `call` (`Sampler`, or the call
 * they came through, such as `generate`) and the option.
 */
export function checkSampling(call: string, options: SamplingOptions): Required<SamplingOptions> {
  const { temperature = 0, topK = 0, topP = 1, seed = 1 } = options;
  if (!(typeof temperature === 'number' && temperature >= 0 && Number.isFinite(temperature))) throw new ConfigError(`${call}: temperature must be a finite number >= 0, got ${fmt(temperature)}`);
  if (!Number.isInteger(topK) || topK < 0) throw new ConfigError(`${call}: topK must be an integer >= 0, got ${fmt(topK)}`);
  if (!(typeof topP === 'number' && topP > 0 && topP <= 1)) throw new ConfigError(`${call}: topP must be a number in (0, 1], got ${fmt(topP)}`);
  return { temperature, topK, topP, seed: checkSeed(call, seed) };
}

/**
 * Picks tokens from logits as `SamplingOptions` say, with its own seeded generator.
 * @example
 * const sampler = new Sampler({ temperature: 0.8, topP: 0.95, seed: 7 });
 * const next = sampler.next(logits);
 */
export class Sampler {
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  private readonly rng: Rng;

  constructor(options: SamplingOptions = {}) {
    checkKeys('Sampler options', options, SAMPLING_KEYS);
    const { temperature, topK, topP, seed } = checkSampling('Sampler', options);
    this.temperature = temperature;
    this.topK = topK;
    this.topP = topP;
    this.rng = new Rng(seed);
  }

  /** The next token for these logits (refused as `argmax` refuses them). */
  next(logits: Float32Array): number {
    if (this.temperature === 0) return argmax(logits);
    checkLogits('Sampler.next', logits);
    // Candidates, most likely first (ties to the lower id, so a seed picks the same token everywhere).
    let ids = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]! || a - b);
    if (this.topK > 0) ids = ids.slice(0, this.topK);
    const max = logits[ids[0]!]!;
    const p = ids.map((i) => Math.exp((logits[i]! - max) / this.temperature));
    const total = p.reduce((a, b) => a + b, 0);
    // Nucleus: the shortest prefix whose mass reaches topP.
    let keep = p.length;
    let mass = 0;
    for (let i = 0; i < p.length; i++) {
      mass += p[i]! / total;
      if (mass >= this.topP) {
        keep = i + 1;
        break;
      }
    }
    const kept = p.slice(0, keep).reduce((a, b) => a + b, 0);
    let u = this.rng.next() * kept;
    for (let i = 0; i < keep; i++) {
      u -= p[i]!;
      if (u < 0) return ids[i]!;
    }
    return ids[keep - 1]!;
  }
}
