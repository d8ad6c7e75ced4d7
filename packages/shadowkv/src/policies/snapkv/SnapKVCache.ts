import { at, type View } from '../../backends/Device.js';
import type { AttentionRows, CacheConfig, Runtime, SequenceState } from '../BaseKVCache.js';
import { PolicyCache } from '../plugin/PolicyCache.js';
import { definePolicyOptions } from '../plugin/policyOptions.js';
import { int, need, record } from '../snapshotChecks.js';
import { pool } from './pool.js';

/** SnapKV's knobs. */
export interface SnapKVOptions {
  /**
   * Prompt tokens kept per kv head (the observation window included) once the prompt is in (the
   * row's next decode step); later tokens are all kept.
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

/** A vote waiting for the row's next decode step: `budget` rows per kv head (`[Hkv x budget]`, ascending per head) among the first `rows`. */
interface Vote {
  rows: number;
  keep: Int32Array;
}

/**
 * SnapKV: the prompt's own last queries pick what to keep. At a prefill call with queries, each of
 * its last `windowTokens` queries attends every earlier token (causal softmax per query head, max
 * over the GQA group: the device's `scoreChunks` with one token per chunk); the votes are summed,
 * pooled over positions (`kernelSize`, max or mean), and the top `budget - windowTokens` tokens per
 * kv head are chosen to stay with the window. The eviction waits for the row's next decode step:
 * a prompt prefilled in chunks (a model loop passes queries with every chunk) is then judged by
 * its last chunk's window, the question, as the paper does, and not by a window of filler. Decode
 * is exact attention over what was kept plus every later token. A prefill call without queries
 * only stores (nothing votes). Based on arXiv 2404.14469 (Li et al., NeurIPS 2024).
 * @example
 * const cache = await createCache({ spec, policy: 'snapkv', options: { budget: 1024 } });
 * cache.prefill(0, { keys, values });                        // the context
 * cache.prefill(0, { keys: qk, values: qv, queries: q });    // the question: its queries vote
 */
export class SnapKVCache extends PolicyCache<SnapKVOptions> {
  readonly name = 'snapkv';
  /** Rows to keep per kv head, chosen during the current prefill call (committed to `votes` once it succeeded). */
  private readonly voting = new Map<SequenceState, Int32Array[]>();
  /** Each row's last vote, applied at its next decode step. */
  private readonly votes = new Map<SequenceState, Vote>();
  private evictions = 0;

  constructor(config: CacheConfig & SnapKVOptions, runtime?: Runtime) {
    super(config, SNAPKV_OPTIONS, runtime);
  }

  protected override beforePrefill(): void {
    this.voting.clear();
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
    const heads = this.voting.get(st) ?? [];
    heads[h] = keep;
    this.voting.set(st, heads);
  }

  /** The call's vote, once all its rows are committed, replaces the row's earlier one. */
  protected override afterPrefill(layer: number, seq: number): void {
    const st = this.states[layer]![seq]!;
    const heads = this.voting.get(st);
    if (!heads) return;
    this.voting.delete(st);
    const keep = new Int32Array(heads.length * this.options.budget);
    heads.forEach((k, h) => keep.set(k, h * this.options.budget));
    this.votes.set(st, { rows: st.tail.count, keep });
  }

  /** The prompt is in: each row's last vote evicts, keeping too every row stored after that vote. */
  protected override beforeStep(layer: number, seqs: readonly number[]): void {
    for (const seq of seqs) {
      const st = this.states[layer]![seq]!;
      const vote = this.votes.get(st);
      if (!vote) continue;
      const { budget } = this.options;
      const after = st.tail.count - vote.rows;
      const keep = Array.from({ length: this.spec.kvHeads }, (_, h) => {
        const k = new Int32Array(budget + after);
        k.set(vote.keep.subarray(h * budget, (h + 1) * budget));
        for (let i = 0; i < after; i++) k[budget + i] = vote.rows + i;
        return k;
      });
      // Room for the tokens generated next, so that the first steps after the prompt do not regrow the buffers.
      st.tail.evict(keep, budget + after + Math.max(64, budget >> 3));
      this.votes.delete(st); // only once applied: a step that fails leaves the vote for the next
      this.evictions += 1;
    }
  }

  /** Cropped below the rows a pending vote was taken over: those rows may be written again, so the vote goes. */
  protected override afterCrop(st: SequenceState): void {
    if ((this.votes.get(st)?.rows ?? 0) > st.tail.count) this.votes.delete(st);
  }

  protected override clearState(st: SequenceState): void {
    this.votes.delete(st);
  }

  protected override saveState(st: SequenceState): Record<string, unknown> {
    const vote = this.votes.get(st);
    return vote ? { vote: { rows: vote.rows, keep: vote.keep } } : {};
  }

  protected override savedStateKeys(): string[] {
    return ['vote'];
  }

  /** A saved vote: the rows it was taken over are still the row's, and each head keeps `budget` of them, ascending. */
  protected override checkSavedState(extra: Record<string, unknown>, path: string, length: number): number {
    if (extra.vote === undefined) return 0;
    const v = record(extra.vote, `${path}.vote`, ['rows', 'keep']);
    const rows = int(v.rows, `${path}.vote.rows`, this.options.budget + 1, length);
    const { budget } = this.options;
    const keep = v.keep;
    need(keep instanceof Int32Array && keep.length === this.spec.kvHeads * budget, `${path}.vote.keep`, `must be an Int32Array of ${this.spec.kvHeads} x ${budget} rows`);
    keep.forEach((r, i) => need(r >= 0 && r < rows && (i % budget === 0 || r > keep[i - 1]!), `${path}.vote.keep[${i}]`, `is ${r}: kept rows are ascending per head and below ${rows}`));
    return 0;
  }

  protected override loadState(st: SequenceState, saved: Record<string, unknown>): void {
    const vote = saved.vote as Vote | undefined;
    if (vote) this.votes.set(st, { rows: vote.rows, keep: vote.keep });
  }

  protected override saveCounters(): Record<string, number> {
    return { evictions: this.evictions };
  }

  protected override loadCounters(counters: Record<string, number>): void {
    this.evictions = counters.evictions ?? 0;
  }
}
