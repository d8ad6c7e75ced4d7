// A cache policy plugin in ~30 lines: attend only to the most recent `window` tokens
// (StreamingLLM without sinks). BaseKVCache does validation, RoPE, storage, snapshots and lifetimes.
import { BaseKVCache, registerPolicy, type CacheConfig, type Runtime, type View } from '../../packages/shadowkv/src/backend.js';

/** `new RecentWindowCache({ spec, window })`. */
export type RecentWindowConfig = CacheConfig & { window?: number };

export class RecentWindowCache extends BaseKVCache {
  readonly name = 'recent-window';
  readonly window: number;

  constructor(config: RecentWindowConfig, runtime?: Runtime) {
    super(config, ['window'], runtime);
    this.window = config.window ?? 512;
  }

  policyOptions(): Record<string, unknown> {
    return { window: this.window };
  }

  /** Exact attention over the last `window` tokens of each kv head's exact tail. */
  protected override attendDecode(layer: number, seq: number, q: View, out: View): void {
    const { tail } = this.states[layer]![seq]!;
    const { headDim: d, scale } = this.spec;
    const n = Math.min(this.window, tail.count);
    for (let h = 0; h < this.spec.kvHeads; h++) {
      const segment = { k: tail.headK(h, tail.count - n), v: tail.headV(h, tail.count - n), n, ld: d };
      const head = h * this.group * d;
      this.device.sparseAttention({ buf: q.buf, offset: q.offset + head }, this.group, d, scale, [segment], { buf: out.buf, offset: out.offset + head });
    }
  }
}

/** Registers the plugin as `'recent-window'` (options: `{ window }`). */
export function registerRecentWindow(): void {
  registerPolicy('recent-window', (config, runtime) => new RecentWindowCache(config, runtime));
}
