import type { ResolvedSpec } from '../spec.js';
import type { Tensor, TensorData } from '../tensor.js';

/** Input of `prefill`: a prompt, or a continuation chunk, for some batch rows. */
export interface PrefillInput {
  /** Pre-RoPE keys `[rows, kvHeads, tokens, headDim]`; the cache applies RoPE at each token's position. */
  keys: Tensor;
  /** Values `[rows, kvHeads, tokens, headDim]`. */
  values: Tensor;
  /** Optional pre-RoPE queries `[rows, queryHeads, tokens, headDim]`: then `prefill` returns causal attention outputs. */
  queries?: Tensor;
  /** Cache rows the input rows go to (default `0 .. rows-1`); rows of one call share a length, other rows may differ. */
  sequences?: readonly number[];
}

/** Input of `decode`: one new token for every batch row (or for each row named in `sequences`). */
export interface DecodeInput {
  /** Pre-RoPE query `[rows, queryHeads, 1, headDim]`. */
  query: Tensor;
  /** Pre-RoPE key `[rows, kvHeads, 1, headDim]`. */
  key: Tensor;
  /** Value `[rows, kvHeads, 1, headDim]`. */
  value: Tensor;
}

/** Options of one `decode` call. */
export interface DecodeOptions {
  /** Cache rows the input rows belong to (default: every row, in order); the other rows sit the step out. */
  sequences?: readonly number[];
  /** Host array to write the output into (the input's dtype, `rows * queryHeads * headDim` elements); returned as the tensor's data. */
  out?: TensorData;
}

/** Bytes a cache holds, per tier and per component. */
export interface MemoryReport {
  /** Accelerator memory (on wasm: the part of the heap that stands for it). */
  device: number;
  /** Host memory (offloaded values). */
  host: number;
  /** Size of the wasm heap, free blocks included (wasm backend only). */
  wasmHeap?: number;
  /** Bytes per component, e.g. `lowRankU`, `landmarks`, `exactTail`, `host:values`. */
  components: Record<string, number>;
  /** Bytes the same tokens would take as a dense K/V cache in the same dtype. */
  dense: number;
}

/** Counters of the sparse decode path (all zero for dense policies). */
export interface PolicyStats {
  /** Decode steps seen (per layer call). */
  steps: number;
  /** Chunks selected at the last decode call that were already on the device. */
  lastHits: number;
  /** Chunks fetched (values) and rebuilt (keys) at the last decode call. */
  lastMisses: number;
  /** Hit rate over all decode calls: hits / (hits + misses). */
  hitRate: number;
  /** Host → device bytes at the last decode call. */
  lastBytesFetched: number;
  /** Host → device bytes over all decode calls. */
  bytesFetched: number;
  /** Tokens attended per (row, kv head) at the last decode call, averaged. */
  lastAttendedTokens: number;
  /** Selected tokens per (row, kv head) at the last decode call, averaged. */
  lastSelectedTokens: number;
  /** First compressions (prefill-style factorization) run. */
  compressions: number;
  /** Compactions of recent tokens into the compressed store. */
  compactions: number;
}

/**
 * The attention + KV cache of a model, per layer. The host does projections, norms and MLP;
 * calls are synchronous once the cache exists.
 */
export interface KVCachePolicy extends Disposable {
  readonly name: string;
  readonly spec: ResolvedSpec;
  /** Stores a prompt (or continuation) for `layer`; returns attention outputs `[rows, queryHeads, tokens, headDim]` when queries are given. */
  prefill(layer: number, input: PrefillInput): Tensor | undefined;
  /** Appends one token per row for `layer` and returns its attention output `[rows, queryHeads, 1, headDim]`. */
  decode(layer: number, input: DecodeInput, options?: DecodeOptions): Tensor;
  /** Tokens stored for a row at a layer (default 0), or the longest row when `sequence` is omitted. */
  length(sequence?: number, layer?: number): number;
  /** Rolls a row back to its first `length` tokens at every layer (exact tokens only). */
  crop(sequence: number, length: number): void;
  memory(): MemoryReport;
  stats(): PolicyStats;
  /** A self-checking snapshot (msgpack, format version, CRC-32); restore with `loadCache`. */
  save(): Uint8Array;
  /** Empties one row (or all): its compressed state is freed, its exact tail's buffers are kept for reuse. */
  reset(sequence?: number): void;
  /** Frees everything; later calls throw `DisposedError`. */
  dispose(): void;
}
