import { at, type View } from '../../backends/Device.js';
import type { AttentionRows, CacheConfig, Runtime, SequenceState } from '../BaseKVCache.js';
import { PolicyCache } from '../plugin/PolicyCache.js';
import { definePolicyOptions } from '../plugin/policyOptions.js';
import { pool } from './pool.js';

/** SnapKV's knobs. */
export interface SnapKVOptions {
  /**
   * Prompt tokens kept per kv head (the observation window included) when a prefill call with
   * queries is done; later tokens are all kept.
   * - default: `2048`
   */
  budget?: number;
  /**
   * Last queries of the call that vote (the observation window, e.g. the question); their tokens are kept.
   * - default: `32` (the paper's)
   */
  windowTokens?: number;
  /**
   * Width of the pooling over positions, so that a kept token brings its neighbours (odd).
   * - default: `7`
   */
  kernelSize?: number;
  /**
   * How votes are pooled over positions.
   * - `'max'` (default, the paper's)
   * - `'avg'`
   */
  pooling?: 'max' | 'avg';
}

export const SNAPKV_OPTIONS = definePolicyOptions<SnapKVOptions>(
  {
    budget: { default: 2048, min: 2, max: 2 ** 24 },
    windowTokens: { default: 32, min: 1, max: 65536 },
    kernelSize: { default: 7, min: 1, max: 1023 },
    pooling: { default: 'max', oneOf: ['max', 'avg'] },
  },
  (o) =>
    o.windowTokens >= o.budget ? `windowTokens (${o.windowTokens}) must be below budget (${o.budget}), which includes it`
    : o.kernelSize % 2 === 0 ? `kernelSize must be odd, got ${o.kernelSize}`
    : undefined,
);

/**
 * SnapKV: the prompt's own last queries pick what to keep. At a prefill call with queries, each of
 * its last `windowTokens` queries attends every earlier token (causal softmax per query head, max
 * over the GQA group: the device's `scoreChunks` with one token per chunk); the votes are summed,
 * pooled over positions (`kernelSize`, max or mean), and the top `budget - windowTokens` tokens per
 * kv head are kept with the window; the rest is evicted. Decode is exact attention over what was
 * kept plus every later token. A prefill call without queries only stores (nothing votes). Based
 * on arXiv 2404.14469 (Li et al., NeurIPS 2024).
 * @example
 * const cache = await createCache({ spec, policy: 'snapkv', options: { budget: 1024 } });
 * cache.prefill(0, { keys, values });                        // the context
 * cache.prefill(0, { keys: qk, values: qv, queries: q });    // the question: its queries vote
 */
export class SnapKVCache extends PolicyCache<SnapKVOptions> {
  readonly name = 'snapkv';
  /** Rows to keep per kv head, chosen during the current prefill call, by row. */
  private readonly pending = new Map<SequenceState, Int32Array[]>();
  private evictions = 0;

  constructor(config: CacheConfig & SnapKVOptions, runtime?: Runtime) {
    super(config, SNAPKV_OPTIONS, runtime);
  }

  protected override beforePrefill(): void {
    this.pending.clear();
  }

  protected override observeQueries(layer: number, seq: number, h: number, queries: View, S: number, rows: AttentionRows): void {
    const { budget, windowTokens, kernelSize, pooling } = this.options;
    const { headDim: d, scale } = this.spec;
    const g = this.group;
    const total = rows.count + S;
    const w = Math.min(windowTokens, S);
    if (total <= budget) return;
    const prefix = total - w;
    const votes = new Float64Array(prefix);
    const q = this.device.scratch('snapkv.q', g * d, 'f32');
    const scores = this.device.scratch('snapkv.scores', total, 'f32');
    for (let i = 0; i < w; i++) {
      // The g query heads at this position (rows S - w + i of each head's S) scored against every token up to it.
      this.device.convertRows(at(q), d, at(queries.buf, queries.offset + (S - w + i) * d), S * d, g, d);
      this.device.scoreChunks(at(q), g, d, scale, rows.k(h), prefix + i + 1, at(scores));
      this.device.read(at(scores) as View & { buf: { dtype: 'f32' } }, prefix).forEach((x, t) => (votes[t]! += x));
    }
    this.device.write(at(scores), Float32Array.from(pool(votes, kernelSize, pooling)));
    const chosen = this.device.selectChunks(at(scores), prefix, budget - w, true).sort();
    const keep = new Int32Array(budget);
    keep.set(chosen);
    for (let i = 0; i < w; i++) keep[budget - w + i] = prefix + i;
    const st = this.states[layer]![seq]!;
    const heads = this.pending.get(st) ?? [];
    heads[h] = keep;
    this.pending.set(st, heads);
  }

  protected override afterPrefill(layer: number, seq: number): void {
    const st = this.states[layer]![seq]!;
    const keep = this.pending.get(st);
    if (!keep) return;
    this.pending.delete(st);
    // Room for the tokens generated next, so that the first steps after the prompt do not regrow the buffers.
    st.tail.evict(keep, this.options.budget + Math.max(64, this.options.budget >> 3));
    this.evictions += 1;
  }

  protected override saveCounters(): Record<string, number> {
    return { evictions: this.evictions };
  }

  protected override loadCounters(counters: Record<string, number>): void {
    this.evictions = counters.evictions ?? 0;
  }
}
