import { ConfigError } from '../../../shadowkv/src/errors/ConfigError.js';
import { Rng } from './Rng.js';

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
  /** Seed of the sampler's generator: the same seed and logits give the same tokens. Default `1`. */
  seed?: number;
}

/** Index of the largest logit (the lowest index among ties). */
export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
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
    const { temperature = 0, topK = 0, topP = 1, seed = 1 } = options;
    if (!(temperature >= 0 && Number.isFinite(temperature))) throw new ConfigError(`temperature must be a finite number >= 0, got ${temperature}`);
    if (!Number.isInteger(topK) || topK < 0) throw new ConfigError(`topK must be an integer >= 0, got ${topK}`);
    if (!(topP > 0 && topP <= 1)) throw new ConfigError(`topP must be in (0, 1], got ${topP}`);
    if (!Number.isInteger(seed)) throw new ConfigError(`seed must be an integer, got ${seed}`);
    this.temperature = temperature;
    this.topK = topK;
    this.topP = topP;
    this.rng = new Rng(seed);
  }

  /** The next token for these logits. */
  next(logits: Float32Array): number {
    if (this.temperature === 0) return argmax(logits);
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
