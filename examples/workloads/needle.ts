// A long-context workload with a planted "needle" chunk that the final queries look for.
import type { ModelSpec, Tensor } from '../../packages/shadowkv/src/index.js';
import { KeyModel } from './KeyModel.js';
import type { Workload } from './Workload.js';
import { randn, rng } from './random.js';

/** Options of the needle workload. */
export interface NeedleOptions {
  /** Prompt tokens per sequence. */
  tokens: number;
  /** Where the needle sits, as a fraction of the prompt. Default 0.37. */
  depth?: number;
  /** Tokens the needle spans (one chunk). Default 8. */
  needleTokens?: number;
  /** Rank of the key model. Default 32. */
  keyRank?: number;
  /** Noise on keys. Default 0.05. */
  noise?: number;
  /**
   * How strongly decode queries point at the needle. Default `8 + log2(tokens / 8192)`, which keeps
   * the needle's share of a head's attention about constant, like a retrieval head's (measured with
   * Llama-3-8B geometry: 0.82 at 8K, 0.81 at 32K, 0.93 at 128K). Fixed lower values spread
   * attention ever thinner as the context grows (focus 6: 0.35 at 8K, 0.06 at 32K).
   */
  focus?: number;
  seed?: number;
}

/**
 * Synthetic per-layer K/V/Q with the structure of real ones: low-rank pre-RoPE keys plus noise,
 * random values, and a needle: a key direction planted in one chunk (on the slowest RoPE
 * frequencies, which retrieval heads use, so it survives rotation) that decode queries align with.
 */
export class NeedleWorkload implements Workload {
  readonly needleStart: number;
  private readonly keyModels: KeyModel[];
  private readonly needles: Float64Array[][]; // [layer][kvHead] unit vectors [d]
  private readonly rand: () => number;

  get tokens(): number {
    return this.o.tokens;
  }

  /** The query focus in use (see `NeedleOptions.focus`). */
  get focus(): number {
    return this.o.focus ?? 8 + Math.log2(this.o.tokens / 8192);
  }

  get description(): string {
    return `synthetic needle: ${this.o.tokens} tokens, keys of rank ${this.o.keyRank ?? 32} + noise ${this.o.noise ?? 0.05}, needle at ${Math.round((this.o.depth ?? 0.37) * 100)} %, query focus ${this.focus.toFixed(1)}`;
  }

  constructor(readonly spec: ModelSpec, readonly o: NeedleOptions) {
    const { layers, kvHeads: Hkv, headDim: d } = spec;
    this.rand = rng(o.seed ?? 17);
    const needleTokens = o.needleTokens ?? 8;
    this.needleStart = Math.floor((o.tokens * (o.depth ?? 0.37)) / needleTokens) * needleTokens;
    this.keyModels = Array.from({ length: layers }, () => new KeyModel(Hkv, d, o.keyRank ?? 32, this.rand, o.noise ?? 0.05));
    this.needles = Array.from({ length: layers }, () => Array.from({ length: Hkv }, () => this.slowDirection(d, spec.rope.style ?? 'half')));
  }

  /** The needle's chunk for a chunk size. */
  needleChunk(chunkSize: number): number {
    return Math.floor(this.needleStart / chunkSize);
  }

  /** A random unit vector on the 8 slowest RoPE frequency pairs. */
  private slowDirection(d: number, style: 'half' | 'interleaved'): Float64Array {
    const v = new Float64Array(d);
    const pairs = Math.min(8, d / 2);
    for (let i = d / 2 - pairs; i < d / 2; i++) {
      const [a, b] = style === 'half' ? [i, i + d / 2] : [2 * i, 2 * i + 1];
      v[a] = randn(1, this.rand)[0]!;
      v[b] = randn(1, this.rand)[0]!;
    }
    const n = Math.hypot(...v);
    return v.map((x) => x / n);
  }

  /** Prompt keys and values of one layer, `[batch, Hkv, S, d]` f32, the needle planted in every row. */
  prompt(layer: number, batch = 1): { keys: Tensor; values: Tensor } {
    const { kvHeads: Hkv, headDim: d } = this.spec;
    const S = this.o.tokens;
    const n = Hkv * S * d;
    const keys = new Float32Array(batch * n);
    const values = new Float32Array(batch * n);
    const needleTokens = this.o.needleTokens ?? 8;
    for (let b = 0; b < batch; b++) {
      const k = keys.subarray(b * n, (b + 1) * n);
      this.keyModels[layer]!.sample(S, k);
      randn(n, this.rand, 1, values.subarray(b * n, (b + 1) * n));
      for (let h = 0; h < Hkv; h++) {
        const dir = this.needles[layer]![h]!;
        for (let t = this.needleStart; t < this.needleStart + needleTokens; t++) {
          for (let j = 0; j < d; j++) k[(h * S + t) * d + j] += 12 * dir[j]!;
        }
      }
    }
    return { keys: { data: keys, shape: [batch, Hkv, S, d], dtype: 'f32' }, values: { data: values, shape: [batch, Hkv, S, d], dtype: 'f32' } };
  }

  /** One decode token for every row: queries that look for the needle, a fresh key and value. */
  step(layer: number, batch = 1): { query: Tensor; key: Tensor; value: Tensor } {
    const { queryHeads: Hq, kvHeads: Hkv, headDim: d } = this.spec;
    const g = Hq / Hkv;
    const focus = this.focus;
    const query = randn(batch * Hq * d, this.rand, 0.3, new Float32Array(batch * Hq * d));
    for (let b = 0; b < batch; b++) {
      for (let j = 0; j < Hq; j++) {
        const dir = this.needles[layer]![Math.floor(j / g)]!;
        for (let i = 0; i < d; i++) query[(b * Hq + j) * d + i] += focus * dir[i]!;
      }
    }
    const key = new Float32Array(batch * Hkv * d);
    for (let b = 0; b < batch; b++) this.keyModels[layer]!.sample(1, key.subarray(b * Hkv * d, (b + 1) * Hkv * d));
    const value = randn(batch * Hkv * d, this.rand, 1, new Float32Array(batch * Hkv * d));
    return {
      query: { data: query, shape: [batch, Hq, 1, d], dtype: 'f32' },
      key: { data: key, shape: [batch, Hkv, 1, d], dtype: 'f32' },
      value: { data: value, shape: [batch, Hkv, 1, d], dtype: 'f32' },
    };
  }
}
