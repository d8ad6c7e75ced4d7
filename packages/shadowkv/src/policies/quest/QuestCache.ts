import type { View } from '../../backends/Device.js';
import type { CacheConfig, Runtime } from '../BaseKVCache.js';
import type { MemoryEstimate } from '../../estimateMemory.js';
import { ChunkScoringCache } from '../plugin/ChunkScoringCache.js';
import { definePolicyOptions } from '../plugin/policyOptions.js';

/** Quest's knobs. */
export interface QuestOptions {
  /**
   * Tokens per chunk (Quest's page); one min/max summary per chunk and kv head.
   * - default: `16` (the paper's page size)
   */
  chunkSize?: number;
  /**
   * Tokens of selected chunks attended per kv head and decode step, a multiple of `chunkSize`.
   * - default: `2048`
   */
  budget?: number;
  /**
   * Last tokens always attended besides the budget (the chunk being filled always is).
   * - default: `0`
   */
  recentTokens?: number;
}

export const QUEST_OPTIONS = definePolicyOptions<QuestOptions>(
  {
    chunkSize: { default: 16, min: 1, max: 1024 },
    budget: { default: 2048, min: 1, max: 65536 },
    recentTokens: { default: 0, min: 0, max: 2 ** 20 },
  },
  (o) => (o.budget % o.chunkSize ? `budget (${o.budget}) must be a multiple of chunkSize (${o.chunkSize})` : undefined),
);

/**
 * Quest: query-aware sparsity over an exact cache. Each chunk of keys is summarized by its
 * per-channel minimum and maximum; a decode query scores a chunk by the upper bound of `q · k` over
 * the box, `Σ_i max(q_i min_i, q_i max_i)`, and attends its top `budget / chunkSize` chunks. Keys
 * and values all stay on the device: Quest saves reads, not memory. Based on arXiv 2406.10774
 * (Tang et al., ICML 2024).
 *
 * NOTE: the bound is `q · center + |q| · radius` with center = (max + min) / 2 and radius =
 * (max - min) / 2, so the device's dot-product `scoreChunks` scores it: a summary is
 * `[center, radius]` (2d wide) and the scoring vector `[q, |q|]`. Scores are softmaxed per query
 * head and the GQA group takes the max, as ShadowKV's landmark scores do.
 * @example
 * const cache = await createCache({ spec, policy: 'quest', options: { budget: 1024, chunkSize: 16 } });
 */
export class QuestCache extends ChunkScoringCache<QuestOptions> {
  readonly name = 'quest';
  protected readonly summaryWidth: number;

  constructor(config: CacheConfig & QuestOptions, runtime?: Runtime) {
    super(config, QUEST_OPTIONS, runtime);
    this.summaryWidth = 2 * this.spec.headDim;
  }

  /** Every token exact, and a `[center, radius]` summary (2 headDim wide) of every whole chunk. */
  protected override memoryNeed(config: CacheConfig, batch: number, tokens: number): MemoryEstimate {
    const { chunkSize } = QUEST_OPTIONS.resolve('QuestCache', config as QuestOptions);
    return this.chunkMemoryNeed(batch, tokens, chunkSize, 2 * this.spec.headDim);
  }

  /** `[center, radius]` of each chunk's keys, per channel. */
  protected summarizeChunks(keys: View, chunks: number, out: View): void {
    const { headDim: d } = this.spec;
    const C = this.options.chunkSize;
    // NOTE: no device op takes a per-channel min/max, so the keys come to the host (once per chunk).
    const k = this.device.read(keys as View & { buf: { dtype: 'f32' } }, chunks * C * d);
    const summary = new Float32Array(chunks * 2 * d);
    for (let c = 0; c < chunks; c++) {
      for (let i = 0; i < d; i++) {
        let lo = Infinity;
        let hi = -Infinity;
        for (let t = 0; t < C; t++) {
          const x = k[(c * C + t) * d + i]!;
          lo = Math.min(lo, x);
          hi = Math.max(hi, x);
        }
        summary[c * 2 * d + i] = (hi + lo) / 2;
        summary[c * 2 * d + d + i] = (hi - lo) / 2;
      }
    }
    this.device.write(out, summary);
  }

  /** `[q, |q|]` per query head. */
  protected scoringQueries(q: View, out: View): void {
    const { queryHeads: Hq, headDim: d } = this.spec;
    const x = this.device.read(q as View & { buf: { dtype: 'f32' } }, Hq * d);
    const s = new Float32Array(Hq * 2 * d);
    for (let j = 0; j < Hq; j++) {
      for (let i = 0; i < d; i++) {
        s[j * 2 * d + i] = x[j * d + i]!;
        s[j * 2 * d + d + i] = Math.abs(x[j * d + i]!);
      }
    }
    this.device.write(out, s);
  }
}
