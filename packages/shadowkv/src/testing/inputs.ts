// Seeded inputs of the conformance kit, on a small model, so that every policy sees the same tensors.
import type { ModelSpec } from '../spec.js';
import type { Tensor } from '../tensor.js';
import { randn, rng } from './random.js';

/** The model the kit runs every policy on: 2 layers, GQA (4 query heads over 2 kv heads), head dim 16. */
export const KIT_SPEC: ModelSpec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };

/** A seeded source of f32 prefill and decode inputs for `KIT_SPEC`. */
export class KitInputs {
  private readonly rand: () => number;

  constructor(seed: number, readonly spec: ModelSpec = KIT_SPEC) {
    this.rand = rng(seed);
  }

  /** A `[...shape]` f32 tensor of N(0, 1) values. */
  tensor(shape: number[]): Tensor {
    return { data: randn(shape.reduce((a, b) => a * b, 1), this.rand, 1, new Float32Array(shape.reduce((a, b) => a * b, 1))), shape, dtype: 'f32' };
  }

  /** Pre-RoPE keys and values of `rows` rows of S tokens, with queries when asked. */
  prompt(rows: number, S: number, queries = false): { keys: Tensor; values: Tensor; queries?: Tensor } {
    const { kvHeads: Hkv, queryHeads: Hq, headDim: d } = this.spec;
    return { keys: this.tensor([rows, Hkv, S, d]), values: this.tensor([rows, Hkv, S, d]), ...(queries ? { queries: this.tensor([rows, Hq, S, d]) } : {}) };
  }

  /** One decode token for `rows` rows. */
  step(rows: number): { query: Tensor; key: Tensor; value: Tensor } {
    const { kvHeads: Hkv, queryHeads: Hq, headDim: d } = this.spec;
    return { query: this.tensor([rows, Hq, 1, d]), key: this.tensor([rows, Hkv, 1, d]), value: this.tensor([rows, Hkv, 1, d]) };
  }
}
