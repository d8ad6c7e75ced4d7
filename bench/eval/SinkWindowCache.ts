// The evaluation's sink + recent-window baseline (StreamingLLM, arXiv 2309.17453): each decode step
// attends the first `sinkTokens` and the last `window` tokens exactly, nothing else. A plugin kept
// here until the SDK has it built in (issue 9); BaseKVCache does storage, RoPE and validation.
import { BaseKVCache, registerPolicy, type CacheConfig, type Runtime, type View } from '../../packages/shadowkv/src/backend.js';

/** `new SinkWindowCache({ spec, sinkTokens, window })`. */
export type SinkWindowConfig = CacheConfig & {
  /** First tokens always attended (the attention sink). Default `4`. */
  sinkTokens?: number;
  /** Most recent tokens attended. Default `1024`. */
  window?: number;
};

export class SinkWindowCache extends BaseKVCache {
  readonly name = 'sink-window';
  readonly sinkTokens: number;
  readonly window: number;

  constructor(config: SinkWindowConfig, runtime?: Runtime) {
    super(config, ['sinkTokens', 'window'], runtime);
    this.sinkTokens = config.sinkTokens ?? 4;
    this.window = config.window ?? 1024;
  }

  policyOptions(): Record<string, unknown> {
    return { sinkTokens: this.sinkTokens, window: this.window };
  }

  /** Exact attention over the sink and the window of each kv head's stored rows (one run when they meet); returns the tokens attended. */
  protected override attendDecode(layer: number, seq: number, q: View, out: View) {
    const { tail } = this.states[layer]![seq]!;
    const { headDim: d, scale } = this.spec;
    const n = tail.count;
    const sink = Math.min(this.sinkTokens, n);
    const from = Math.max(sink, n - this.window); // the window's first row
    for (let h = 0; h < this.spec.kvHeads; h++) {
      const run = (start: number, count: number) => ({ k: tail.headK(h, start), v: tail.headV(h, start), n: count, ld: d });
      const segments = from === sink ? [run(0, n)] : [run(0, sink), run(from, n - from)];
      const head = h * this.group * d;
      this.device.sparseAttention({ buf: q.buf, offset: q.offset + head }, this.group, d, scale, segments, { buf: out.buf, offset: out.offset + head });
    }
    return { tokens: n - from + sink };
  }
}

const sinkWindowFactory = (config: CacheConfig & Record<string, unknown>, runtime: Runtime) => new SinkWindowCache(config, runtime);

/** Registers the plugin as `'sink-window'` (options `{ sinkTokens, window }`); idempotent. */
export function registerSinkWindow(): void {
  registerPolicy('sink-window', sinkWindowFactory);
}
