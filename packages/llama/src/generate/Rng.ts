import { ConfigError } from '../../../shadowkv/src/errors/ConfigError.js';
import { fmt } from '../../../shadowkv/src/policies/validate.js';

/**
 * Throws a ConfigError naming `call` unless `seed` is an integer in [0, 2^32): the generator's state
 * is 32 bits, so a larger or negative seed would wrap onto another's stream (2^32 + 1 gave seed 1's).
 */
export function checkSeed(call: string, seed: unknown): number {
  if (!(Number.isInteger(seed) && (seed as number) >= 0 && (seed as number) < 2 ** 32)) throw new ConfigError(`${call}: seed must be an integer in [0, 2^32), got ${fmt(seed)}`);
  return seed as number;
}

/** A seeded pseudo-random generator (mulberry32): the same seed gives the same samples on every platform. */
export class Rng {
  private state: number;

  /** @param seed an integer in [0, 2^32); anything else is a ConfigError */
  constructor(seed: number) {
    this.state = checkSeed('Rng', seed);
  }

  /** A float in [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}
