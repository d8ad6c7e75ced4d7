import { abortable, checkSignal } from '../../abortable.js';
import { at, fp8ChunkBytes, type DeviceBuffer } from '../../backends/Device.js';
import { HEAD_FIELDS, type StepGeometry, type StepRow } from '../../backends/LayerStep.js';
import { checkKeys, checkShadowKVDtype, resolveShadowKVOptions, SHADOWKV_OPTION_KEYS, type ResolvedShadowKVOptions, type ShadowKVOptions } from '../../config.js';
import { ConfigError } from '../../errors/ConfigError.js';
import { LayerIndexError } from '../../errors/LayerIndexError.js';
import { SequenceIndexError } from '../../errors/SequenceIndexError.js';
import { resolveSpec } from '../../spec.js';
import { BaseKVCache, type AttentionRows, type CacheConfig, type RowPlan, type Runtime, type SavedRow, type SequenceState } from '../BaseKVCache.js';
import { capture, checkLayer, checkList, checkSequence, fmt } from '../validate.js';
import { buildStore, commitStore, compactSequence, newStore, type CompressContext } from './compress.js';
import { hostPage, maxOutliers, storeComponents, storeGeometry, type CompressedStore, type StoreGeometry, type StoreSnapshot } from './CompressedStore.js';
import { checkStoreSnapshot } from './storeSnapshot.js';
import { HostPages } from './HostPages.js';
import { storeChunks, storedChunks } from '../capacity.js';
import { OutOfMemoryError } from '../../errors/OutOfMemoryError.js';
import { estimateMemory, type MemoryEstimate } from '../../estimateMemory.js';
import { range } from '../range.js';

/** A ShadowKV row: the exact tail, plus the compressed store once the row was compressed. */
export interface ShadowState extends SequenceState {
  store?: CompressedStore;
}

/** `new ShadowKVCache(config)`: the model, the cache options and ShadowKV's knobs in one object. */
export type ShadowKVConfig = CacheConfig & ShadowKVOptions;

/** Where `compress()` is: one (layer, sequence) compressed of `total`. */
export interface CompressProgress {
  done: number;
  total: number;
  layer: number;
  sequence: number;
}

/** Which rows `compress()` takes, and how it reports. */
export interface CompressOptions {
  /** Layers to compress (default: all). */
  layers?: readonly number[];
  /** Rows to compress (default: all). */
  sequences?: readonly number[];
  /** Called after each (layer, sequence) is compressed; synchronous (`compressAsync` also awaits a promise it returns). */
  onProgress?: (p: CompressProgress) => void;
}

/** `compressAsync()`'s options: an `onProgress` that returns a promise is awaited before the next pair. */
export interface CompressAsyncOptions extends Omit<CompressOptions, 'onProgress'> {
  onProgress?: (p: CompressProgress) => void | PromiseLike<void>;
  /**
   * Stops the call: it rejects with `signal.reason` before the next pair, or at once while it awaits
   * an `onProgress` promise (an already aborted signal rejects even when nothing is due).
   */
  signal?: AbortSignal;
}

const isThenable = (v: unknown): v is PromiseLike<unknown> => (typeof v === 'object' || typeof v === 'function') && v !== null && typeof (v as { then?: unknown }).then === 'function';

/** The options of `compress()` / `compressAsync()`, each read once; an unknown key is a `ConfigError`. */
function compressOptions(call: string, options: unknown, async: boolean): CompressOptions & { signal?: unknown } {
  const keys = ['layers', 'sequences', 'onProgress', ...(async ? ['signal'] : [])] as const;
  if (options !== null && typeof options === 'object') checkKeys(call, options, keys);
  return capture(call, 'options', options, keys) as CompressOptions & { signal?: unknown };
}

/** The ShadowKV options among a flat config's keys. */
function pickOptions(config: ShadowKVConfig | CacheConfig): ShadowKVOptions {
  const given = (config !== null && typeof config === 'object' ? config : {}) as Record<string, unknown>;
  return Object.fromEntries(SHADOWKV_OPTION_KEYS.filter((k) => k in given).map((k) => [k, given[k]])) as ShadowKVOptions;
}

/** The host tier's optional formats: the option, the device op that writes it, the tier's name. */
const HOST_TIER_FORMATS = [['fp8Values', 'quantizeValues', 'fp8'], ['packedValues', 'packValues', 'packed']] as const;

/**
 * ShadowKV: low-rank pre-RoPE keys and landmarks on the device, values in host memory, and per
 * decode step exact attention over the local window, outlier chunks, the top-scoring chunks and
 * recent tokens. Based on arXiv 2410.21465; the exact steps are in docs/algorithm.md.
 *
 * A row is compressed once its whole prompt is in: at its first decode step, or at `compress()`.
 * Prefill in as many calls as you like; the factorization always covers the whole prompt.
 * @example
 * await ready();
 * const cache = new ShadowKVCache({ spec: LLAMA3_8B, budget: 2048 });
 * cache.prefill(0, { keys, values });            // pre-RoPE [1, 8, S, 128], in one call or several
 * const out = cache.decode(0, { query, key, value }); // [1, 32, 1, 128]
 */
export class ShadowKVCache extends BaseKVCache<ShadowState> {
  readonly name = 'shadowkv';
  readonly options: ResolvedShadowKVOptions;
  private readonly ctx: CompressContext;
  private compressions = 0;

  constructor(config: ShadowKVConfig, runtime?: Runtime) {
    // Options are checked before the base class starts a runtime for the cache.
    const options = resolveShadowKVOptions(pickOptions(config), resolveSpec(config?.spec));
    super(config, SHADOWKV_OPTION_KEYS, runtime);
    this.options = options;
    // The host tier's format against this cache's dtype and backend (the runtime is started by now).
    try {
      checkShadowKVDtype(options, this.dtype);
      for (const [option, op, tier] of HOST_TIER_FORMATS) {
        if (options[option] && !this.device[op]) {
          throw new ConfigError(`${option}: the ${this.backendInfo.name} backend has no ${tier} host tier (its devices have no ${op}; wasm and cuda have); leave ${option} off there`);
        }
      }
    } catch (err) {
      this.dispose();
      throw err;
    }
    const page = hostPage(this.storeGeometry());
    const pages = new HostPages(this.device, page.length, page.dtype);
    // NOTE: no store outgrows what a row of maxTokens stores (storeChunks sizes the first within it too).
    const maxChunks = storedChunks(this.cacheOptions.maxTokens, options);
    this.ctx = { device: this.device, spec: this.spec, options, geometry: this.stepGeometry(), pages, maxTokens: this.cacheOptions.maxTokens, maxChunks };
    // A declared size on a device whose host tier is slow to allocate: every row's pages at maxTokens, now.
    if (config.maxTokens !== undefined && this.device.pinsHost) {
      try {
        pages.reserve((this.spec.layers - this.options.denseLayers) * this.batch * this.pagesPerRow());
      } catch (err) {
        this.dispose();
        throw err;
      }
    }
  }

  /** Host pages a row of maxTokens tokens holds once compressed, as estimateMemory sizes them (0 if it stays dense). */
  private pagesPerRow(): number {
    const o = this.options, tokens = this.cacheOptions.maxTokens;
    if (tokens < o.denseThreshold || storedChunks(tokens, o) <= 0) return 0;
    return Math.ceil(this.ctx.maxChunks / o.hostPageChunks) * this.spec.kvHeads;
  }

  policyOptions(): Record<string, unknown> {
    return { ...this.options };
  }

  /** ShadowKV's estimate (`estimateMemory`) with this config's options: what the creation preflight checks. */
  protected override memoryNeed(config: CacheConfig, batch: number, tokens: number): MemoryEstimate {
    return estimateMemory({ spec: this.spec, policy: 'shadowkv', tokens, batch, dtype: this.dtype, maxTokens: tokens, options: pickOptions(config) });
  }

  protected override memoryKnobs(config: CacheConfig): string {
    return `${pickOptions(config).hotChunks ? 'hotChunks, ' : ''}budget, rank or maxRecentTokens`;
  }

  protected override stepGeometry(): StepGeometry {
    const o = this.options;
    return {
      ...super.stepGeometry(),
      chunkSize: o.chunkSize, maxSelected: o.budget / o.chunkSize, maxOutliers: maxOutliers(o), localTokens: o.localTokens, scoreScale: o.scoreScale,
    };
  }

  /** Chunk ids selected at the last decode step of (layer, sequence, kv head), ascending; `[]` while the row is dense. */
  selection(layer: number, seq: number, kvHead: number): number[] {
    return this.run('selection()', () => this.readSelection(layer, seq, kvHead));
  }

  private readSelection(layer: number, seq: number, kvHead: number): number[] {
    checkLayer('selection()', layer, this.spec.layers);
    checkSequence('selection()', seq, this.batch);
    if (!Number.isInteger(kvHead) || kvHead < 0 || kvHead >= this.spec.kvHeads) throw new LayerIndexError(`selection(): kv head ${fmt(kvHead)} is outside [0, ${this.spec.kvHeads})`);
    const store = this.states[layer]![seq]!.store;
    if (!store) return [];
    const count = store.headCountsNow()[kvHead * HEAD_FIELDS + 2]!;
    const max = store.geometry.maxSelected;
    return Array.from(this.device.read(at(store.selectedIds, kvHead * max) as never, count) as Int32Array).sort((a, b) => a - b);
  }

  /**
   * Compresses every row whose prompt has reached `denseThreshold` and is not compressed yet (a
   * decode step does it on its own for its rows). Returns the (layer, sequence) pairs compressed.
   */
  compress(options: CompressOptions = {}): number {
    // NOTE: a disposed cache is named before its options are read, as by every other method.
    this.guard('compress()');
    const o = compressOptions('compress()', options, false);
    const due = this.run('compress()', () => this.due('compress()', o));
    // NOTE: compress() cannot wait: an async onProgress would run on after it returned, and its rejection would go unhandled.
    if (o.onProgress?.constructor.name === 'AsyncFunction') {
      throw new ConfigError('compress(): onProgress is an async function, which compress() cannot wait for; pass a synchronous one, or use compressAsync(), which awaits it');
    }
    let compressed = 0;
    due.forEach(([l, s], i) => {
      compressed += this.compressIfDue('compress()', l, s);
      const result: unknown = o.onProgress?.({ done: i + 1, total: due.length, layer: l, sequence: s });
      if (isThenable(result)) {
        // Its outcome is this error's to report: a rejection left pending would be unhandled.
        result.then(undefined, () => {});
        throw new ConfigError(`compress(): onProgress returned a promise after pair ${i + 1} of ${due.length} (layer ${l}, sequence ${s}), which compress() cannot wait for; the pairs before it stay compressed. Use compressAsync(), which awaits it`);
      }
    });
    return compressed;
  }

  /**
   * `compress()` that yields to the event loop between (layer, sequence) pairs; `signal` stops it
   * between pairs. Other calls on the cache may run while it yields (a decode step compresses its
   * own rows; a pair compressed or reset meanwhile is skipped and not counted); `dispose()` makes
   * the next pair a `DisposedError`.
   */
  async compressAsync(options: CompressAsyncOptions = {}): Promise<number> {
    this.guard('compressAsync()');
    const o = compressOptions('compressAsync()', options, true) as CompressAsyncOptions;
    const due = this.run('compressAsync()', () => this.due('compressAsync()', o));
    const signal = o.signal;
    // As the platform's calls do: an aborted signal rejects, even where there is nothing to do.
    signal?.throwIfAborted();
    let done = 0, compressed = 0;
    for (const [l, s] of due) {
      await abortable(new Promise<void>((resolve) => setTimeout(resolve, 0)), signal);
      signal?.throwIfAborted(); // an abort between the yield and this line stops the call before the pair too
      compressed += this.compressIfDue('compressAsync()', l, s);
      await abortable(o.onProgress?.({ done: ++done, total: due.length, layer: l, sequence: s }), signal);
    }
    return compressed;
  }

  /** Compresses (layer, sequence) if it is still due: a decode step or a reset from a callback may have come first. 1 if it did. */
  private compressIfDue(call: string, layer: number, seq: number): number {
    return this.run(call, () => {
      if (!this.isDue(layer, this.states[layer]![seq]!)) return 0;
      this.compressRows([[layer, seq]]);
      return 1;
    });
  }

  private due(call: string, options: { layers?: unknown; sequences?: unknown; onProgress?: unknown; signal?: unknown }): [number, number][] {
    if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw new ConfigError(`${call}: onProgress must be a function, got ${fmt(options.onProgress)}`);
    checkSignal(call, options.signal);
    const layers = (checkList(call, 'layers', options.layers, this.spec.layers) ?? this.states.map((_, l) => l)) as number[];
    const seqs = (checkList(call, 'sequences', options.sequences, this.batch) ?? Array.from({ length: this.batch }, (_, s) => s)) as number[];
    layers.forEach((l) => checkLayer(call, l, this.spec.layers));
    seqs.forEach((s) => checkSequence(call, s, this.batch));
    if (new Set(layers).size !== layers.length) throw new LayerIndexError(`${call}: layers ${fmt(layers)} repeat a layer`);
    if (new Set(seqs).size !== seqs.length) throw new SequenceIndexError(`${call}: sequences ${fmt(seqs)} repeat a row`);
    return layers.flatMap((l) => seqs.filter((s) => this.isDue(l, this.states[l]![s]!)).map((s): [number, number] => [l, s]));
  }

  /** Dense, past the dense layers, at the threshold, and with at least one whole chunk beyond the local window to compress. */
  private isDue(layer: number, st: ShadowState): boolean {
    const o = this.options;
    return layer >= o.denseLayers && !st.store && st.length >= o.denseThreshold && st.length - o.localTokens >= o.chunkSize;
  }

  /** Compresses rows all or none: every store is built first, then all are committed. */
  private compressRows(rows: [number, number][]): void {
    const built: [ShadowState, CompressedStore][] = [];
    try {
      for (const [l, s] of rows) {
        const st = this.states[l]![s]!;
        built.push([st, buildStore(this.ctx, st)]);
      }
    } catch (err) {
      built.forEach(([, store]) => store.free());
      throw err;
    }
    for (const [st, store] of built) {
      commitStore(this.ctx, st, store);
      this.compressions += 1;
    }
  }

  /** A row whose prompt is in and reached the threshold is compressed before its first step (all such rows, or none). */
  protected override beforeStep(layer: number, seqs: readonly number[]): void {
    // NOTE: a loop that makes nothing while no row is due, as on almost every step.
    let due: [number, number][] | undefined;
    for (const s of seqs) if (this.isDue(layer, this.states[layer]![s]!)) (due ??= []).push([layer, s]);
    if (due) this.compressRows(due);
  }

  /** Compaction rule of docs/algorithm.md: a full recent region compacts after the step, room made first. */
  protected override planRow(layer: number, seq: number, active: boolean): RowPlan {
    const st = this.states[layer]![seq]!;
    const o = this.options;
    const store = st.store;
    if (!store || !active) return { store, compact: false };
    const count = st.tail.count + 1;
    const compact = count > o.localTokens + o.maxRecentTokens;
    if (compact) store.reserveChunks(store.tokens / o.chunkSize + Math.floor((count - o.localTokens) / o.chunkSize));
    return { store, compact };
  }

  protected override afterStep(layer: number, seq: number, row: StepRow): void {
    if (!row.compact) return;
    const st = this.states[layer]![seq]!;
    const n = Math.floor((st.tail.count - this.options.localTokens) / this.options.chunkSize) * this.options.chunkSize;
    st.tail.shifted(n);
    st.store!.tokens += n;
  }

  /** A continuation prefill into a compressed row compacts what passed the recent region. */
  protected override afterPrefill(layer: number, seq: number): void {
    const st = this.states[layer]![seq]!;
    if (!st.store || st.tail.count <= this.options.localTokens + this.options.maxRecentTokens) return;
    try {
      compactSequence(this.ctx, st, st.store, this.layerCounters(layer));
    } catch (err) {
      // NOTE: the tokens are stored exactly in the tail; a later step compacts them (with room made then).
      if (!(err instanceof OutOfMemoryError)) throw err;
    }
  }

  protected override tailStart(st: ShadowState): number {
    return st.store?.tokens ?? 0;
  }

  /** For prefill attention over a compressed row: every token's key (rebuilt or exact) and value, in position order. */
  protected override attentionRows(layer: number, seq: number, pending: number): AttentionRows {
    const st = this.states[layer]![seq]!;
    const store = st.store;
    if (!store) return super.attentionRows(layer, seq, pending);
    const { kvHeads: Hkv, headDim: d } = this.spec;
    const C = this.options.chunkSize;
    const n = (st.length + pending) * d;
    const exact = st.tail.count + pending; // the tail's rows and the ones written after it
    const nc = store.tokens;
    const counts = store.headCountsNow();
    const all = range(0, nc / C);
    // NOTE: the caller frees them through `release`, which it gets only once this returns: a failure
    // here (the second allocation, a staging buffer of the rebuild or the gather) frees what was made.
    const made: DeviceBuffer[] = [];
    const release = () => made.forEach((b) => this.device.free(b));
    try {
      const k = this.device.alloc(Hkv * n, this.dtype, 'prefill');
      made.push(k);
      const v = this.device.alloc(Hkv * n, this.dtype, 'prefill');
      made.push(v);
      for (let h = 0; h < Hkv; h++) {
        const [L, O] = [counts[h * HEAD_FIELDS]!, counts[h * HEAD_FIELDS + 1]!];
        const ids = this.device.read(at(store.landmarkIds, h * store.chunkCapacity) as never, L) as Int32Array;
        this.device.rebuildKeys({
          u: at(store.u), rank: store.rank, sv: at(store.sv, h * d), ldsv: Hkv * d, d,
          chunkIds: ids, slots: ids, C, invFreq: this.invFreq, style: this.spec.rope.style, out: at(k, h * n), ldo: d,
        });
        // Outlier chunks exact, keys and values, as a decode step attends them (the host tier's copy
        // of their values is fp8 under fp8Values).
        this.device.gatherValues(at(v, h * n), store.values, h, all, all);
        const outliers = this.device.read(at(store.outlierIds, h * store.geometry.maxOutliers) as never, O) as Int32Array;
        const base = h * store.geometry.maxOutliers * C * d;
        outliers.forEach((c, i) => {
          this.device.copy(at(k, h * n + c * C * d), at(store.outlierK, base + i * C * d), C * d);
          this.device.copy(at(v, h * n + c * C * d), at(store.outlierV, base + i * C * d), C * d);
        });
        this.device.copy(at(k, h * n + nc * d), st.tail.headK(h), exact * d);
        this.device.copy(at(v, h * n + nc * d), st.tail.headV(h), exact * d);
      }
      return { count: st.length, k: (h) => at(k, h * n), v: (h) => at(v, h * n), release };
    } catch (err) {
      release();
      throw err;
    }
  }

  protected override clearState(st: ShadowState): void {
    st.store?.free();
    st.store = undefined;
  }

  protected override disposePolicy(): void {
    // NOTE: optional: a constructor that refuses its options disposes before ctx exists.
    this.ctx?.pages.dispose();
  }

  protected override saveState(st: ShadowState): Record<string, unknown> {
    return st.store ? { store: st.store.snapshot() } : {};
  }

  protected override savedStateKeys(): string[] {
    return ['store'];
  }

  /** A saved store checked to the last field against this cache's spec and options; returns its tokens. */
  protected override checkSavedState(extra: Record<string, unknown>, path: string, length: number): number {
    if (extra.store === undefined) return 0;
    return checkStoreSnapshot(extra.store, `${path}.store`, this.storeGeometry(), length).tokens;
  }

  protected override restoreBytes(row: SavedRow): number {
    const s = row.extra.store as StoreSnapshot | undefined;
    if (!s) return super.restoreBytes(row);
    const parts = storeComponents({ ...this.storeGeometry(), rank: s.rank }, storeChunks(s.tokens / this.options.chunkSize, this.options, this.cacheOptions.maxTokens));
    return super.restoreBytes(row) + Object.values(parts).reduce((a, b) => a + b, 0);
  }

  protected override hostChunkBytes(): number {
    return this.options.fp8Values ? fp8ChunkBytes(this.options.chunkSize, this.spec.headDim) : super.hostChunkBytes();
  }

  /** Store sizes of this cache (rank as configured; a store's own rank may be lower). */
  private storeGeometry(): StoreGeometry {
    return storeGeometry(this.options, this.spec, this.dtype, this.options.rank);
  }

  protected override loadState(st: ShadowState, saved: Record<string, unknown>): void {
    const s = saved.store as StoreSnapshot | undefined;
    if (!s) return;
    st.store = newStore(this.ctx, s.rank, s.tokens / this.options.chunkSize);
    st.store.restore(s);
  }

  protected override saveCounters(): Record<string, number> {
    return { compressions: this.compressions };
  }

  protected override loadCounters(counters: Record<string, number>): void {
    this.compressions = counters.compressions ?? 0;
  }
}
