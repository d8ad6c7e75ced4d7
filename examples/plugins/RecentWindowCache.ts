// A cache policy plugin in ~30 lines: attend only to the most recent `window` tokens
// (StreamingLLM without sinks). BaseKVCache does validation, RoPE, storage, snapshots and lifetimes.
import { BaseKVCache, registerPolicy, resolveCacheOptions, type Device, type ResolvedCacheOptions, type ResolvedSpec, type View } from '../../packages/shadowkv/src/index.js';

export class RecentWindowCache extends BaseKVCache {
  readonly name = 'recent-window';

  constructor(spec: ResolvedSpec, cache: ResolvedCacheOptions, device: Device, private readonly window = 512) {
    super(spec, cache, device);
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
  registerPolicy('recent-window', ({ spec, cache, device, options }) => new RecentWindowCache(spec, resolveCacheOptions(cache), device, options.window as number | undefined));
}
