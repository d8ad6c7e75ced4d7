import { at, type DeviceBuffer, type View } from '../../backends/Device.js';
import { checkLayer, checkSequence, fmt } from '../validate.js';
import { LayerIndexError } from '../../errors/LayerIndexError.js';
import { OutOfMemoryError } from '../../errors/OutOfMemoryError.js';
import type { CacheConfig, Attended, Runtime, SequenceState } from '../BaseKVCache.js';
import { growCapacity } from '../capacity.js';
import { DTYPE_BYTES } from '../../dtype.js';
import { WASM_HEAP_BYTES, type MemoryEstimate } from '../../estimateMemory.js';
import { ids, need } from '../snapshotChecks.js';
import { attendRows, rowRuns } from './attendRows.js';
import { PolicyCache } from './PolicyCache.js';
import type { PolicyOptionSpec } from './policyOptions.js';

/** Chunks summarized per call of `summarizeChunks`: about 1024 tokens' keys at a time. */
const summaryBlock = (chunkSize: number) => Math.max(1, Math.floor(1024 / chunkSize));

/** Options every chunk-scoring policy has. */
export interface ChunkScoringOptions {
  /** Tokens per chunk; one summary per chunk and kv head. */
  chunkSize?: number;
  /** Tokens of selected chunks attended per kv head and step (a multiple of `chunkSize`). */
  budget?: number;
  /** The last tokens always attended (besides the budget), whole chunks or not. */
  recentTokens?: number;
}

/** A row of a chunk-scoring policy: every token exact in the tail, and a summary per whole chunk. */
export interface ChunkState extends SequenceState {
  summaries?: DeviceBuffer; // [Hkv, capacity, width] storage dtype
  capacity: number;
  /** Chunks summarized: rows `[0, chunks * C)` of the tail. */
  chunks: number;
  /** Chunk ids selected at the last step, per kv head. */
  selected: Int32Array[];
}

/**
 * Query-aware chunk selection over an exact cache: every token stays exact on the device; each whole
 * chunk gets a summary (`summarizeChunks`), each decode step scores the summaries with the query
 * (`scoringQueries`, then the device's `scoreChunks`: softmax per query head, max over the GQA group),
 * attends the top `budget / chunkSize` chunks and the last `recentTokens` tokens, and nothing else.
 * A subclass says how a chunk is summarized and what vector scores it.
 */
export abstract class ChunkScoringCache<O extends ChunkScoringOptions> extends PolicyCache<O, ChunkState> {
  /** Elements of one chunk's summary (per kv head). */
  protected abstract readonly summaryWidth: number;

  constructor(config: CacheConfig & O, spec: PolicyOptionSpec<O>, runtime?: Runtime) {
    super(config, spec, runtime);
    for (const st of this.states.flat()) Object.assign(st, { capacity: 0, chunks: 0, selected: [] });
  }

  /** Summaries of `chunks` chunks of one kv head: `keys` f32 `[chunks * C, d]` (post-RoPE) → `out` f32 `[chunks, summaryWidth]`. */
  protected abstract summarizeChunks(keys: View, chunks: number, out: View): void;

  /** The vectors summaries are scored with: the row's queries `q` f32 `[Hq, d]` (post-RoPE) → `out` f32 `[Hq, summaryWidth]`. */
  protected abstract scoringQueries(q: View, out: View): void;

  private get C(): number {
    return this.options.chunkSize as number;
  }

  /** Chunk ids selected at the last decode step of (layer, sequence, kv head), ascending; `[]` while every chunk fits the budget. */
  selection(layer: number, seq: number, kvHead: number): number[] {
    return this.run('selection()', () => {
      checkLayer('selection()', layer, this.spec.layers);
      checkSequence('selection()', seq, this.batch);
      if (!Number.isInteger(kvHead) || kvHead < 0 || kvHead >= this.spec.kvHeads) throw new LayerIndexError(`selection(): kv head ${fmt(kvHead)} is outside [0, ${this.spec.kvHeads})`);
      return Array.from(this.states[layer]![seq]!.selected[kvHead] ?? []);
    });
  }

  protected override afterPrefill(layer: number, seq: number): void {
    this.summarizeOrDefer(this.states[layer]![seq]!);
  }

  /** The step's selection is the row's once every row's step went through (a later row's hook may throw). */
  protected override afterStep(layer: number, seq: number): void {
    const st = this.states[layer]![seq]!;
    st.selected = this.picked.get(st) ?? [];
    this.picked.delete(st);
    this.summarizeOrDefer(st);
  }

  /** Chunk ids a step chose per row, kept until every row's step went through. */
  private readonly picked = new Map<ChunkState, Int32Array[]>();

  protected override beforeStep(): void {
    this.picked.clear();
  }

  /** Cropped: the summaries of chunks no longer whole go before the next step scores them, and so do cut chunks from the selection. */
  protected override afterCrop(st: ChunkState): void {
    this.summarize(st);
    st.selected = st.selected.map((ids) => ids.filter((c) => c < st.chunks));
  }

  /**
   * After a committed call: summaries that cannot grow now (out of memory) wait for the next call,
   * their chunks attended exactly meanwhile (they do not compete), as ShadowKV defers compaction.
   */
  private summarizeOrDefer(st: ChunkState): void {
    try {
      this.summarize(st);
    } catch (err) {
      if (!(err instanceof OutOfMemoryError)) throw err;
    }
  }

  /** Summarizes the whole chunks the tail holds beyond the summarized ones (after a crop, only what is left counts). */
  private summarize(st: ChunkState): void {
    const { kvHeads: Hkv, headDim: d } = this.spec;
    const C = this.C;
    const w = this.summaryWidth;
    const whole = Math.floor(st.tail.count / C);
    st.chunks = Math.min(st.chunks, whole);
    const m = whole - st.chunks;
    if (m <= 0) return;
    if (whole > st.capacity) this.grow(st, growCapacity(whole, st.capacity, 64, Math.floor(this.cacheOptions.maxTokens / C)));
    // NOTE: a block of chunks at a time: these scratch buffers are kept, so sized by a whole prompt
    // they would hold an f32 copy of its keys for good (chunks are summarized one by one, so the same).
    const block = Math.min(m, summaryBlock(C));
    const keys = this.device.scratch('chunks.keys', block * C * d, 'f32');
    const out = this.device.scratch('chunks.summaries', block * w, 'f32');
    for (let h = 0; h < Hkv; h++) {
      for (let c = st.chunks; c < whole; c += block) {
        const n = Math.min(block, whole - c);
        this.device.convert(at(keys), st.tail.headK(h, c * C), n * C * d);
        this.summarizeChunks(at(keys), n, at(out));
        this.device.convert(at(st.summaries!, (h * st.capacity + c) * w), at(out), n * w);
      }
    }
    st.chunks = whole;
  }

  /**
   * `memoryNeed` of a policy whose summaries are `width` elements a chunk: every token exact (the
   * dense estimate), and the summaries of every whole chunk of every row, one row's old ones while
   * they grow, and the summarizing and scoring scratch.
   */
  protected chunkMemoryNeed(batch: number, tokens: number, chunkSize: number, width: number): MemoryEstimate {
    const exact = super.memoryNeed({} as CacheConfig, batch, tokens);
    const { layers, kvHeads: Hkv, queryHeads: Hq, headDim: d } = this.spec;
    const chunks = Math.floor(tokens / chunkSize);
    const row = Hkv * chunks * width * DTYPE_BYTES[this.dtype];
    const block = Math.min(chunks, summaryBlock(chunkSize));
    const scratch = 4 * (block * chunkSize * d + block * width + Hq * width + chunks);
    const chunkSummaries = layers * batch * row;
    const device = exact.device + chunkSummaries;
    const transient = exact.transient + row + scratch;
    return { ...exact, device, transient, components: { ...exact.components, chunkSummaries }, fitsWasmHeap: device + transient <= WASM_HEAP_BYTES };
  }

  private grow(st: ChunkState, capacity: number): void {
    const w = this.summaryWidth;
    const next = this.device.alloc(this.spec.kvHeads * capacity * w, this.dtype, 'chunkSummaries');
    if (st.summaries) {
      for (let h = 0; h < this.spec.kvHeads; h++) this.device.copy(at(next, h * capacity * w), at(st.summaries, h * st.capacity * w), st.chunks * w);
      this.device.free(st.summaries);
    }
    st.summaries = next;
    st.capacity = capacity;
  }

  /** Scores the summarized chunks before the recent tokens, attends the top ones, the rest of the tail after them. */
  protected override attendDecode(layer: number, seq: number, q: View, out: View): Attended {
    const st = this.states[layer]![seq]!;
    const { queryHeads: Hq, kvHeads: Hkv, scale } = this.spec;
    const g = this.group;
    const C = this.C;
    const w = this.summaryWidth;
    const k = (this.options.budget as number) / C;
    // Chunks wholly before the recent tokens compete; everything from the first other row is attended.
    const n = Math.min(st.chunks, Math.floor(Math.max(0, st.tail.count - ((this.options.recentTokens as number | undefined) ?? 0)) / C));
    const read: Attended = { tokens: 0, selected: 0 };
    if (n <= k) {
      this.picked.set(st, []);
      for (let h = 0; h < Hkv; h++) read.tokens += attendRows(this.device, st.tail, h, g, scale, [[0, st.tail.count]], q, out);
      return read;
    }
    const qs = this.device.scratch('chunks.queries', Hq * w, 'f32');
    const scores = this.device.scratch('chunks.scores', n, 'f32');
    this.scoringQueries(q, at(qs));
    const picked: Int32Array[] = [];
    this.picked.set(st, picked);
    for (let h = 0; h < Hkv; h++) {
      this.device.scoreChunks(at(qs, h * g * w), g, w, scale, at(st.summaries!, h * st.capacity * w), n, at(scores));
      const ids = this.device.selectChunks(at(scores), n, k, true).sort();
      picked.push(ids);
      const runs = [...rowRuns(ids, C), [n * C, st.tail.count - n * C] as const];
      read.tokens += attendRows(this.device, st.tail, h, g, scale, runs, q, out);
      read.selected! += ids.length * C;
    }
    return read;
  }

  protected override clearState(st: ChunkState): void {
    if (st.summaries) this.device.free(st.summaries);
    Object.assign(st, { summaries: undefined, capacity: 0, chunks: 0, selected: [] });
  }

  /** The last step's selection (`selection()`); summaries are not saved, being a function of the stored keys. */
  protected override saveState(st: ChunkState): Record<string, unknown> {
    return st.selected.length ? { selected: st.selected } : {};
  }

  /** A subclass that saves fields of its own adds them to these. */
  protected override savedStateKeys(): string[] {
    return ['selected'];
  }

  /** A saved selection: per kv head at most budget / chunkSize distinct chunk ids, ascending, of the row's whole chunks. */
  protected override checkSavedState(extra: Record<string, unknown>, path: string, length: number): number {
    const { selected } = extra;
    if (selected === undefined) return 0;
    need(Array.isArray(selected) && selected.length === this.spec.kvHeads, `${path}.selected`, `must hold one id list per kv head (${this.spec.kvHeads})`);
    const k = (this.options.budget as number) / this.C, chunks = Math.floor(length / this.C);
    (selected as unknown[]).forEach((v, h) => ids(v, `${path}.selected[${h}]`, k, chunks, true));
    return 0;
  }

  /** A restored row recomputes its summaries from its keys rather than trusting a snapshot's. */
  protected override loadState(st: ChunkState, saved: Record<string, unknown>): void {
    this.summarize(st);
    st.selected = ((saved.selected as Int32Array[] | undefined) ?? []).map((a) => Int32Array.from(a));
  }
}
