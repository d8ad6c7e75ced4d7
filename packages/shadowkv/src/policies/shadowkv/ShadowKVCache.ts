import { at, type Device, type DeviceBuffer } from '../../backends/Device.js';
import { resolveShadowKVOptions, type ResolvedCacheOptions, type ResolvedShadowKVOptions, type ShadowKVOptions } from '../../config.js';
import { DTYPE_BYTES } from '../../dtype.js';
import type { ResolvedSpec } from '../../spec.js';
import { BaseKVCache, type AttentionRows, type SequenceState } from '../BaseKVCache.js';
import type { PolicyStats } from '../KVCachePolicy.js';
import { compactSequence, compressSequence, newStore, type CompressContext } from './compress.js';
import type { CompressedStore } from './CompressedStore.js';
import { decodeLayerComposed, type LayerStepCounts, type ShadowKVLayerStep } from './decodeLayer.js';

/** A ShadowKV row: the exact tail, plus the compressed store once the row was compressed. */
export interface ShadowState extends SequenceState {
  store?: CompressedStore;
}

/**
 * ShadowKV: low-rank pre-RoPE keys and landmarks on the device, values in host memory, and per
 * decode step exact attention over the local window, outlier chunks, the top-scoring chunks and
 * recent tokens. Based on arXiv 2410.21465; the exact steps are in docs/algorithm.md.
 * @example
 * const cache = await createCache({ policy: 'shadowkv', spec: LLAMA3_8B, options: { budget: 2048 } });
 * cache.prefill(0, { keys, values });            // pre-RoPE [1, 8, S, 128]
 * const out = cache.decode(0, { query, key, value }); // [1, 32, 1, 128]
 */
export class ShadowKVCache extends BaseKVCache<ShadowState> {
  readonly name = 'shadowkv';
  readonly options: ResolvedShadowKVOptions;
  private readonly ctx: CompressContext;
  private counters = { steps: 0, hits: 0, misses: 0, bytesFetched: 0, compressions: 0, compactions: 0 };
  private last: LayerStepCounts & { bytesFetched: number } = { hits: 0, misses: 0, selectedTokens: 0, attendedTokens: 0, heads: 0, bytesFetched: 0 };

  constructor(spec: ResolvedSpec, cacheOptions: ResolvedCacheOptions, device: Device, options: ShadowKVOptions = {}) {
    super(spec, cacheOptions, device);
    this.options = resolveShadowKVOptions(options);
    this.ctx = { device, spec, options: this.options, dtype: this.dtype, invFreq: this.invFreq, ropeStyle: this.ropeStyle };
  }

  policyOptions(): Record<string, unknown> {
    return { ...this.options };
  }

  /** Chunk ids selected at the last decode step of (layer, sequence, kv head), ascending; `[]` while the row is dense. */
  selection(layer: number, seq: number, kvHead: number): number[] {
    const hs = this.states[layer]?.[seq]?.store?.heads[kvHead];
    return hs ? Array.from(hs.selected.subarray(0, hs.selectedCount)).sort((a, b) => a - b) : [];
  }

  /** Decode steps 2-5 for every row of the layer: one call on a backend that fuses them. */
  protected override attendLayer(layer: number, q: DeviceBuffer, out: DeviceBuffer): void {
    const step: ShadowKVLayerStep = {
      spec: this.spec, options: this.options, invFreq: this.invFreq, ropeStyle: this.ropeStyle, q, out,
      rows: this.states[layer]!.map(({ tail, store }) => ({ tail, store })),
    };
    const counts = this.device.decodeShadowKVLayer?.(step) ?? decodeLayerComposed(this.device, step);
    const bytes = counts.misses * this.options.chunkSize * this.spec.headDim * DTYPE_BYTES[this.dtype];
    this.last = { ...counts, bytesFetched: bytes };
    this.counters.steps += 1;
    this.counters.hits += counts.hits;
    this.counters.misses += counts.misses;
    this.counters.bytesFetched += bytes;
  }

  /** Compression rules of docs/algorithm.md, checked after every call. */
  protected override afterAppend(layer: number, seq: number): void {
    const st = this.states[layer]![seq]!;
    const o = this.options;
    if (!st.store) {
      if (st.length < o.denseThreshold) return;
      st.store = compressSequence(this.ctx, st);
      if (st.store) this.counters.compressions += 1;
    } else if (st.tail.count > o.localTokens + o.maxRecentTokens) {
      if (compactSequence(this.ctx, st, st.store) > 0) this.counters.compactions += 1;
    }
  }

  /** For prefill attention over a compressed row: every token's key (rebuilt or exact) and value, in position order. */
  protected override attentionRows(layer: number, seq: number): AttentionRows {
    const st = this.states[layer]![seq]!;
    const store = st.store;
    if (!store) return super.attentionRows(layer, seq);
    const { kvHeads: Hkv, headDim: d } = this.spec;
    const C = this.options.chunkSize;
    const n = st.length * d;
    const nc = store.tokens;
    const k = this.device.alloc(Hkv * n, this.dtype, 'prefill');
    const v = this.device.alloc(Hkv * n, this.dtype, 'prefill');
    for (let h = 0; h < Hkv; h++) {
      const hs = store.heads[h]!;
      const ids = hs.landmarkIds.slice(0, hs.landmarkCount);
      this.device.rebuildKeys({
        u: at(store.u), rank: store.geometry.rank, sv: at(store.sv, h * d), ldsv: Hkv * d, d,
        chunkIds: ids, slots: ids, C, invFreq: this.invFreq, style: this.ropeStyle, out: at(k, h * n), ldo: d,
      });
      const base = h * store.geometry.maxOutliers * C * d;
      hs.outlierIds.forEach((c, i) => this.device.copy(at(k, h * n + c * C * d), at(store.outlierK, base + i * C * d), C * d));
      this.device.copy(at(k, h * n + nc * d), st.tail.headK(h), st.tail.count * d);
      this.device.write(at(v, h * n), store.values.data.subarray(h * store.chunkCapacity * C * d, (h * store.chunkCapacity * C + nc) * d));
      this.device.copy(at(v, h * n + nc * d), st.tail.headV(h), st.tail.count * d);
    }
    return { k: (h) => at(k, h * n), v: (h) => at(v, h * n), release: () => [k, v].forEach((b) => this.device.free(b)) };
  }

  protected override clearState(st: ShadowState): void {
    st.store?.free();
    st.store = undefined;
  }

  protected override saveState(st: ShadowState): Record<string, unknown> {
    return st.store ? { store: st.store.snapshot() } : {};
  }

  protected override loadState(st: ShadowState, saved: Record<string, unknown>): void {
    const s = saved.store as { tokens: number; rank: number } | undefined;
    if (!s) return;
    st.store = newStore(this.ctx, s.rank, Math.max(1, s.tokens / this.options.chunkSize));
    st.store.restore(saved.store as never);
  }

  override stats(): PolicyStats {
    const c = this.counters;
    const heads = Math.max(this.last.heads, 1);
    return {
      steps: c.steps,
      lastHits: this.last.hits,
      lastMisses: this.last.misses,
      hitRate: c.hits + c.misses ? c.hits / (c.hits + c.misses) : 0,
      lastBytesFetched: this.last.bytesFetched,
      bytesFetched: c.bytesFetched,
      lastAttendedTokens: this.last.attendedTokens / heads,
      lastSelectedTokens: this.last.selectedTokens / heads,
      compressions: c.compressions,
      compactions: c.compactions,
    };
  }

  protected override saveCounters(): Record<string, number> {
    return { ...this.counters };
  }

  protected override loadCounters(counters: Record<string, number>): void {
    this.counters = { ...this.counters, ...counters };
  }
}
