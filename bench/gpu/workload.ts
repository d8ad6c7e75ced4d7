// The GPU benchmark's synthetic layer: one prompt per context (low-rank pre-RoPE keys plus noise,
// random values, a few planted needle chunks), prefilled into every row, and per-row decode queries
// that drift step to step so that consecutive selections overlap the way real decoding does.
// Structured like examples/workloads/needle.ts (the CPU bench's), but generated fast: the key
// model's product runs as one device gemm and the noise comes from a table, since Box-Muller per
// element in JS took ~1 minute for 128K tokens x 8 heads x 128 dims.
import { at, ropeFrequencies, type DecodeInput, type Device, type ModelSpec, type Tensor } from '../../packages/shadowkv/src/backend.js';
import { randn, rng } from '../../examples/workloads/random.js';

/** Knobs of the workload, recorded in the JSON. */
export interface WorkloadOptions {
  /** Rank of the pre-RoPE key model (the CPU bench's needle workload uses 32). */
  keyRank: number;
  /** Std of the noise on keys. */
  keyNoise: number;
  /** Needle chunks per kv head, at depths (i + 0.5) / needles of the context. */
  needles: number;
  /** Added to a needle chunk's keys along its direction (as in needle.ts). */
  needleStrength: number;
  /** Per-element std of a query's random part (the needle part is `focusAt(tokens)` along its direction). */
  queryNoise: number;
  /** Relative step of the drift: q <- normalize(q + drift * |q| / sqrt(d) * N(0, I)) * |q|, per query head. */
  drift: number;
  seed: number;
}

export const WORKLOAD_DEFAULTS: WorkloadOptions = { keyRank: 32, keyNoise: 0.05, needles: 4, needleStrength: 12, queryNoise: 0.3, drift: 0.25, seed: 7 };

const NEEDLE_TOKENS = 8;

/** Query focus on a needle: `8 + log2(tokens / 8192)`, as needle.ts (a retrieval head's share of attention stays ~0.8-0.9). */
export const focusAt = (tokens: number) => 8 + Math.log2(tokens / 8192);

/** N(0, 1) samples by table lookup with xorshift32: fast in JS, and plenty for synthetic data. */
export class Gauss {
  private readonly table: Float32Array;
  private s: number;

  constructor(seed: number) {
    this.table = randn(65536, rng(seed), 1, new Float32Array(65536));
    this.s = (seed * 2654435761) >>> 0 || 1;
  }

  /** Adds (or with `add` false, writes) `scale` * N(0, 1) to out[from, from + n). */
  fill(out: Float32Array, scale: number, from = 0, n = out.length - from, add = false): Float32Array {
    let s = this.s;
    const t = this.table;
    for (let i = from; i < from + n; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      out[i] = (add ? out[i]! : 0) + scale * t[s & 0xffff]!;
    }
    this.s = s >>> 0;
    return out;
  }
}

/**
 * Prompt keys and values for one layer, made once at the longest context and cut per context
 * (a prefix per kv head): keys = code · basis + mean + noise, heads concatenated in the basis.
 */
export class PromptSource {
  readonly basis: Float32Array; // [keyRank, Hkv*d]
  readonly mean: Float32Array; // [Hkv*d]
  /** Unit directions on the slowest RoPE pairs (they survive rotation): [kvHead][needle] of [d]. */
  readonly needleDirs: Float32Array[][];
  private readonly keys: Float32Array; // [Hkv, maxTokens, d] pre-RoPE
  private readonly values: Float32Array; // [Hkv, maxTokens, d]
  private readonly gauss: Gauss;

  /** `device` runs the key model's product (a scratch device of the benchmark's backend). */
  constructor(readonly spec: ModelSpec, readonly maxTokens: number, readonly o: WorkloadOptions, device: Device) {
    const { kvHeads: Hkv, headDim: d } = spec;
    const D = Hkv * d, S = maxTokens, R = o.keyRank;
    this.gauss = new Gauss(o.seed);
    this.basis = this.gauss.fill(new Float32Array(R * D), 1 / Math.sqrt(R));
    this.mean = this.gauss.fill(new Float32Array(D), 0.5);
    this.needleDirs = Array.from({ length: Hkv }, () => Array.from({ length: o.needles }, () => this.slowDirection(d)));
    const low = product(device, this.gauss.fill(new Float32Array(S * R), 1), this.basis, S, R, D); // [S, D]
    this.keys = new Float32Array(Hkv * S * d);
    for (let h = 0; h < Hkv; h++) {
      for (let t = 0; t < S; t++) {
        const dst = (h * S + t) * d, src = t * D + h * d;
        for (let j = 0; j < d; j++) this.keys[dst + j] = low[src + j]! + this.mean[h * d + j]!;
      }
    }
    this.gauss.fill(this.keys, o.keyNoise, 0, this.keys.length, true);
    this.values = this.gauss.fill(new Float32Array(Hkv * S * d), 1);
  }

  /** Token where needle i starts in a prompt of `tokens` (chunk-aligned). */
  needleStart(tokens: number, i: number): number {
    return Math.floor((tokens * (i + 0.5)) / this.o.needles / NEEDLE_TOKENS) * NEEDLE_TOKENS;
  }

  /** One row's prompt `[1, Hkv, tokens, d]` f32, the needles planted at depths of `tokens`. */
  prompt(tokens: number): { keys: Tensor; values: Tensor } {
    const { kvHeads: Hkv, headDim: d } = this.spec;
    const S = this.maxTokens;
    if (tokens > S) throw new RangeError(`prompt: ${tokens} tokens asked of a source of ${S}`);
    const keys = new Float32Array(Hkv * tokens * d);
    const values = new Float32Array(Hkv * tokens * d);
    for (let h = 0; h < Hkv; h++) {
      keys.set(this.keys.subarray(h * S * d, (h * S + tokens) * d), h * tokens * d);
      values.set(this.values.subarray(h * S * d, (h * S + tokens) * d), h * tokens * d);
      this.needleDirs[h]!.forEach((dir, i) => {
        const from = this.needleStart(tokens, i);
        for (let t = from; t < from + NEEDLE_TOKENS; t++) {
          for (let j = 0; j < d; j++) keys[(h * tokens + t) * d + j] += this.o.needleStrength * dir[j]!;
        }
      });
    }
    const shape = [1, Hkv, tokens, d];
    return { keys: { data: keys, shape, dtype: 'f32' }, values: { data: values, shape, dtype: 'f32' } };
  }

  /** One new token's pre-RoPE keys for every kv head, from the same model as the prompt. */
  sampleToken(out: Float32Array, gauss: Gauss): void {
    const R = this.o.keyRank, D = this.mean.length;
    const code = gauss.fill(new Float32Array(R), 1);
    out.set(this.mean);
    for (let r = 0; r < R; r++) for (let j = 0; j < D; j++) out[j] += code[r]! * this.basis[r * D + j]!;
    gauss.fill(out, this.o.keyNoise, 0, D, true);
  }

  /** A random unit vector on the 8 slowest RoPE frequency pairs ('half' style: dim i pairs with i + d/2). */
  private slowDirection(d: number): Float32Array {
    const v = new Float32Array(d);
    for (let i = d / 2 - Math.min(8, d / 2); i < d / 2; i++) {
      const [a, b] = this.gauss.fill(new Float32Array(2), 1);
      [v[i], v[i + d / 2]] = [a!, b!];
    }
    const n = Math.hypot(...v);
    return v.map((x) => x / n);
  }
}

/** [M, K] x [K, N] in f32 on a device (a scratch one: its buffers are freed after). */
function product(device: Device, a: Float32Array, b: Float32Array, M: number, K: number, N: number): Float32Array {
  const bufs = [device.alloc(M * K, 'f32', 'workload'), device.alloc(K * N, 'f32', 'workload'), device.alloc(M * N, 'f32', 'workload')] as const;
  try {
    device.write(at(bufs[0]), a);
    device.write(at(bufs[1]), b);
    device.gemm({ M, N, K, a: at(bufs[0]), lda: K, b: at(bufs[1]), ldb: N, c: at(bufs[2]), ldc: N });
    return device.read(at(bufs[2]) as never, M * N) as Float32Array;
  } finally {
    bufs.forEach((buf) => device.free(buf));
  }
}

/**
 * Decode inputs of `batch` rows: row b looks for needle `b % needles` of every kv head (plus a
 * random part), and each step's query is the previous one drifted (`WorkloadOptions.drift`).
 */
export class DriftingQueries {
  private readonly q: Float32Array; // [batch, Hq, d] current queries
  private readonly gauss: Gauss;

  constructor(private readonly source: PromptSource, readonly batch: number, tokens: number, seed: number) {
    const { queryHeads: Hq, kvHeads: Hkv, headDim: d } = source.spec;
    const g = Hq / Hkv;
    this.gauss = new Gauss(seed);
    this.q = this.gauss.fill(new Float32Array(batch * Hq * d), source.o.queryNoise);
    const focus = focusAt(tokens);
    for (let b = 0; b < batch; b++) {
      for (let j = 0; j < Hq; j++) {
        const dir = source.needleDirs[Math.floor(j / g)]![b % source.o.needles]!;
        for (let i = 0; i < d; i++) this.q[(b * Hq + j) * d + i] += focus * dir[i]!;
      }
    }
  }

  /** The next step's inputs; `fixed` repeats the current queries instead of drifting them. */
  next(fixed = false): DecodeInput {
    const { queryHeads: Hq, kvHeads: Hkv, headDim: d } = this.source.spec;
    const B = this.batch;
    if (!fixed) this.drift();
    const key = new Float32Array(B * Hkv * d);
    for (let b = 0; b < B; b++) this.source.sampleToken(key.subarray(b * Hkv * d, (b + 1) * Hkv * d), this.gauss);
    return {
      query: { data: this.q.slice(), shape: [B, Hq, 1, d], dtype: 'f32' },
      key: { data: key, shape: [B, Hkv, 1, d], dtype: 'f32' },
      value: { data: this.gauss.fill(new Float32Array(B * Hkv * d), 1), shape: [B, Hkv, 1, d], dtype: 'f32' },
    };
  }

  /**
   * The current queries, un-rotated for each row's next position: after the cache's RoPE they are
   * the same vectors every step, so the selection stays put (a fixed query in post-RoPE terms).
   */
  pinned(positions: readonly number[]): DecodeInput {
    const { queryHeads: Hq, headDim: d, rope } = this.source.spec;
    if ((rope.style ?? 'half') !== 'half') throw new RangeError('pinned: written for the half RoPE style (Llama)');
    const input = this.next(true);
    const q = input.query.data as Float32Array;
    const invFreq = ropeFrequencies(d, rope);
    for (let b = 0; b < this.batch; b++) {
      const [cos, sin] = [invFreq.map((f) => Math.cos(positions[b]! * f)), invFreq.map((f) => Math.sin(positions[b]! * f))];
      for (let v = b * Hq * d; v < (b + 1) * Hq * d; v += d) {
        for (let i = 0; i < d / 2; i++) {
          const [x, y] = [q[v + i]!, q[v + i + d / 2]!];
          q[v + i] = x * cos[i]! + y * sin[i]!; // rotation by -angle
          q[v + i + d / 2] = y * cos[i]! - x * sin[i]!;
        }
      }
    }
    return input;
  }

  /** q <- normalize(q + noise) * |q| per (row, query head): a random walk of about `drift` radians per step. */
  private drift(): void {
    const d = this.source.spec.headDim;
    const noise = this.gauss.fill(new Float32Array(this.q.length), 1);
    for (let v = 0; v < this.q.length; v += d) {
      let n0 = 0, n1 = 0;
      for (let i = v; i < v + d; i++) n0 += this.q[i]! ** 2;
      const step = (this.source.o.drift * Math.sqrt(n0)) / Math.sqrt(d);
      for (let i = v; i < v + d; i++) {
        this.q[i] = this.q[i]! + step * noise[i]!;
        n1 += this.q[i]! ** 2;
      }
      const s = Math.sqrt(n0 / n1);
      for (let i = v; i < v + d; i++) this.q[i] = this.q[i]! * s;
    }
  }
}
