import type { View } from '../../backends/Device.js';
import type { Attended, CacheConfig, Runtime } from '../BaseKVCache.js';
import { WASM_HEAP_BYTES, type MemoryEstimate } from '../../estimateMemory.js';
import { attendRows } from '../plugin/attendRows.js';
import { PolicyCache } from '../plugin/PolicyCache.js';
import { definePolicyOptions } from '../plugin/policyOptions.js';

/** StreamingLLM's knobs. */
export interface StreamingOptions {
  /**
   * First tokens of a row kept for good (the attention sinks).
   * - default: `4` (the paper's)
   */
  sinkTokens?: number;
  /**
   * Most recent tokens attended, the new one included.
   * - default: `2044` (with the sinks, 2048 tokens attended per step)
   */
  windowTokens?: number;
}

/** Rows past sinks + window held before an eviction. */
const streamingSlack = (windowTokens: number) => Math.max(16, Math.ceil(windowTokens / 8));

export const STREAMING_OPTIONS = definePolicyOptions<StreamingOptions>({
  sinkTokens: { default: 4, min: 0, max: 65536 },
  windowTokens: { default: 2044, min: 1, max: 2 ** 20 },
});

/**
 * StreamingLLM: attention sinks plus a recent window. Each step attends the first `sinkTokens` and
 * the last `windowTokens` tokens of a row; everything between is evicted, so memory stays bounded
 * however long the row grows. Keys keep their original positions (rotated once, when stored), as
 * kvpress's StreamingLLMPress does; the paper re-positions them inside the cache instead, which
 * matters only past the model's trained context. Based on arXiv 2309.17453 (Xiao et al., ICLR 2024).
 * @example
 * const cache = await createCache({ spec, policy: 'streaming', options: { sinkTokens: 4, windowTokens: 1020 } });
 */
export class StreamingCache extends PolicyCache<StreamingOptions> {
  readonly name = 'streaming';
  private evictions = 0;

  constructor(config: CacheConfig & StreamingOptions, runtime?: Runtime) {
    super(config, STREAMING_OPTIONS, runtime);
  }

  /** Rows past sinks + window a row may hold before they are evicted: copies stay amortized (a window is moved once per `slack` steps). */
  private get slack(): number {
    return streamingSlack(this.options.windowTokens);
  }

  /**
   * A row holds its sinks, window and slack between evictions (its buffers grown by 256 rows at a
   * time before the first); only the rows a prefill call fills hold their whole prompt, until the
   * call returns: one layer's rows, with a growth's old buffer or the call's working memory.
   */
  protected override memoryNeed(config: CacheConfig, batch: number, tokens: number): MemoryEstimate {
    const full = super.memoryNeed(config, batch, tokens);
    const { sinkTokens, windowTokens } = STREAMING_OPTIONS.resolve('StreamingCache', config as StreamingOptions);
    const held = sinkTokens + windowTokens + streamingSlack(windowTokens) + 1;
    const rowTokens = Math.min(tokens, held + Math.max(256, held >> 3));
    const exactTail = (full.dense / Math.max(tokens, 1)) * rowTokens;
    // One layer's rows of the whole prompt (full.dense holds every layer's).
    const transient = full.dense / this.spec.layers + full.transient;
    return { ...full, device: exactTail, components: { exactTail }, transient, fitsWasmHeap: exactTail + transient <= WASM_HEAP_BYTES };
  }

  protected override attendDecode(layer: number, seq: number, q: View, out: View): Attended {
    const { tail } = this.states[layer]![seq]!;
    const { sinkTokens: sinks, windowTokens: window } = this.options;
    const head = Math.min(sinks, tail.count);
    const from = Math.max(head, tail.count - window);
    const runs = [[0, head], [from, tail.count - from]] as const;
    let tokens = 0;
    for (let h = 0; h < this.spec.kvHeads; h++) tokens += attendRows(this.device, tail, h, this.group, this.spec.scale, runs, q, out);
    return { tokens };
  }

  protected override afterPrefill(layer: number, seq: number): void {
    this.evict(layer, seq, 0);
  }

  protected override afterStep(layer: number, seq: number): void {
    this.evict(layer, seq, this.slack);
  }

  /** Drops the rows between the sinks and the window once more than `slack` of them piled up. */
  private evict(layer: number, seq: number, slack: number): void {
    const { tail } = this.states[layer]![seq]!;
    const { sinkTokens: sinks, windowTokens: window } = this.options;
    if (tail.count <= sinks + window + slack) return;
    const rows = new Int32Array(sinks + window);
    for (let i = 0; i < sinks; i++) rows[i] = i;
    for (let i = 0; i < window; i++) rows[sinks + i] = tail.count - window + i;
    tail.evict(Array.from({ length: this.spec.kvHeads }, () => rows), sinks + window + this.slack + 1);
    this.evictions += 1;
  }

  protected override saveCounters(): Record<string, number> {
    return { evictions: this.evictions };
  }

  protected override loadCounters(counters: Record<string, number>): void {
    this.evictions = counters.evictions ?? 0;
  }
}
