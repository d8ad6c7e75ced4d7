import { at, type Device, type Segment, type View } from '../../backends/Device.js';
import { resolveShadowKVOptions, type ResolvedCacheOptions, type ResolvedShadowKVOptions, type ShadowKVOptions } from '../../config.js';
import { DTYPE_BYTES } from '../../dtype.js';
import type { ResolvedSpec } from '../../spec.js';
import { BaseKVCache, shift, type AttentionRows, type SequenceState } from '../BaseKVCache.js';
import type { PolicyStats } from '../KVCachePolicy.js';
import { compactSequence, compressSequence, type CompressContext } from './compress.js';
import { CompressedStore } from './CompressedStore.js';
import { reuseSlots } from './reuseSlots.js';

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
  private last = { hits: 0, misses: 0, bytesFetched: 0, attended: 0, selected: 0, heads: 0 };

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

  protected override beginDecode(): void {
    this.counters.steps += 1;
    this.last = { hits: 0, misses: 0, bytesFetched: 0, attended: 0, selected: 0, heads: 0 };
  }

  /** Decode steps 2-5 of docs/algorithm.md for one row. */
  protected override attendDecode(layer: number, seq: number, q: View, out: View): void {
    const st = this.states[layer]![seq]!;
    const store = st.store;
    if (!store) return super.attendDecode(layer, seq, q, out);
    const { kvHeads: Hkv, headDim: d, scale } = this.spec;
    const { chunkSize: C, budget } = this.options;
    const g = this.group;
    const block = C * d;
    const maxSelected = budget / C;
    for (let h = 0; h < Hkv; h++) {
      const hs = store.heads[h]!;
      const qh = shift(q, h * g * d);
      // 2. Score: softmax(q · L / √d) per query head, max over the GQA group.
      const scores = this.device.scratch('shadowkv.scores', hs.landmarkCount, 'f32');
      this.device.scoreChunks(qh, g, d, scale, at(store.landmarks, h * store.chunkCapacity * d), hs.landmarkCount, at(scores));
      // 3. Select the top budget/C chunks (ties: lower chunk id).
      const picks = this.device.selectChunks(at(scores), hs.landmarkCount, maxSelected, true);
      const ids = picks.map((i) => hs.landmarkIds[i]!);
      // 4. Reuse last step's chunks; fetch V and rebuild K only for misses.
      if (ids.length < hs.selectedCount) store.clearSelection();
      const plan = reuseSlots(hs.selected, hs.selectedCount, ids);
      hs.selectedCount = ids.length;
      const selK = at(store.selectedK, h * maxSelected * block);
      const selV = at(store.selectedV, h * maxSelected * block);
      if (plan.missIds.length) {
        const blocks = plan.missIds.map((c) => h * store.chunkCapacity + c);
        this.device.fetchBlocks(selV, store.values, blocks, plan.missSlots, block);
        this.device.rebuildKeys({
          u: at(store.u), rank: store.geometry.rank, sv: at(store.sv, h * d), ldsv: Hkv * d, d,
          chunkIds: plan.missIds, slots: plan.missSlots, C, invFreq: this.invFreq, style: this.ropeStyle, out: selK, ldo: d,
        });
      }
      // 5. Exact attention over outliers ∪ selected chunks ∪ the exact tail.
      const outlierBase = h * store.geometry.maxOutliers * block;
      const segments: Segment[] = [
        { k: at(store.outlierK, outlierBase), v: at(store.outlierV, outlierBase), n: hs.outlierIds.length * C, ld: d },
        { k: selK, v: selV, n: ids.length * C, ld: d },
        { k: st.tail.headK(h), v: st.tail.headV(h), n: st.tail.count, ld: d },
      ];
      this.device.sparseAttention(qh, g, d, scale, segments, shift(out, h * g * d));
      this.count(plan.hits, plan.missIds.length, ids.length * C, segments.reduce((n, s) => n + s.n, 0));
    }
  }

  private count(hits: number, misses: number, selected: number, attended: number): void {
    const bytes = misses * this.options.chunkSize * this.spec.headDim * DTYPE_BYTES[this.dtype];
    this.last.hits += hits;
    this.last.misses += misses;
    this.last.bytesFetched += bytes;
    this.last.selected += selected;
    this.last.attended += attended;
    this.last.heads += 1;
    this.counters.hits += hits;
    this.counters.misses += misses;
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
    const { kvHeads: Hkv, headDim: d } = this.spec;
    const o = this.options;
    const geometry = { heads: Hkv, d, C: o.chunkSize, rank: s.rank, maxOutliers: o.outlierChunks + Math.ceil(o.sinkTokens / o.chunkSize), maxSelected: o.budget / o.chunkSize, dtype: this.dtype };
    st.store = new CompressedStore(this.device, geometry, Math.max(1, s.tokens / o.chunkSize));
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
      lastAttendedTokens: this.last.attended / heads,
      lastSelectedTokens: this.last.selected / heads,
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
