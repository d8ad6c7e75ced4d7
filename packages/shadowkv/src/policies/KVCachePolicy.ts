import type { DeviceTensor } from '../DeviceTensor.js';
import type { ResolvedSpec } from '../spec.js';
import type { Tensor, TensorData } from '../tensor.js';

/** A cache input: a host `Tensor`, or a `DeviceTensor` of the cache's backend (read in place, no copy through JS). */
export type AnyTensor = Tensor | DeviceTensor;

/**
 * Input of `prefill`: a prompt, or a continuation chunk, for some batch rows. `T` is where the
 * tensors live: host `Tensor`s (the default), `DeviceTensor`s, or either (`AnyTensor`).
 */
export interface PrefillInput<T extends AnyTensor = Tensor> {
  /** Pre-RoPE keys `[rows, kvHeads, tokens, headDim]`; the cache applies RoPE at each token's position. */
  keys: T;
  /** Values `[rows, kvHeads, tokens, headDim]`. */
  values: T;
  /**
   * Optional pre-RoPE queries `[rows, queryHeads, tokens, headDim]`: then `prefill` returns causal
   * attention outputs, as a host `Tensor`, or (device queries) a new `DeviceTensor` you own.
   */
  queries?: T;
  /** Cache rows the input rows go to (default `0 .. rows-1`); rows of one call share a length, other rows may differ. */
  sequences?: readonly number[];
}

/** Input of `decode`: one new token for every batch row (or for each row named in `sequences`); `T` as in `PrefillInput`. */
export interface DecodeInput<T extends AnyTensor = Tensor> {
  /** Pre-RoPE query `[rows, queryHeads, 1, headDim]`. */
  query: T;
  /** Pre-RoPE key `[rows, kvHeads, 1, headDim]`. */
  key: T;
  /** Value `[rows, kvHeads, 1, headDim]`. */
  value: T;
}

/** Options of one `decode` call; `O` is the type of `out`. */
export interface DecodeOptions<O extends TensorData | DeviceTensor = TensorData> {
  /** Cache rows the input rows belong to (default: every row, in order); the other rows sit the step out. */
  sequences?: readonly number[];
  /**
   * Where the output goes (the input's dtype, `rows * queryHeads * headDim` elements):
   * - a host array: filled and returned as the tensor's data
   * - a `DeviceTensor` of the cache's backend: the step writes it on the device (no wait), and it is returned
   * - default: a new host tensor, or, when the query is a device tensor, a `DeviceTensor` the cache
   *   owns, valid until a later decode of that layer returns the cache's output again (a device
   *   query and no `out`; copy it, or pass your own `out`, to keep it)
   */
  out?: O;
  /**
   * Whether the inputs are checked for NaN, infinities and values their storage cannot hold
   * (`NonFiniteError`, nothing changed). Host inputs are scanned in JS; device tensors on the
   * device, which costs one small read back per call (a wait for the GPU on CUDA).
   * - default: `true`; `false` skips it (hot loops whose inputs are known finite: a NaN then
   *   poisons that row's cache)
   */
  checkValues?: boolean;
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
  /** Of `lastMisses`, the chunks copied from the device's hot-value cache (ShadowKV's `hotChunks`) instead of the host. */
  lastHotHits: number;
  /** Hit rate over all decode calls: hits / (hits + misses). */
  hitRate: number;
  /** Share of all misses the hot-value cache served (0 without one). */
  hotHitRate: number;
  /** Host → device bytes at the last decode call. */
  lastBytesFetched: number;
  /** Host → device bytes over all decode calls. */
  bytesFetched: number;
  /** Tokens attended per (row, kv head) at the last decode call, averaged. */
  lastAttendedTokens: number;
  /**
   * The same at every layer's last decode call, averaged over the layers that decoded: a step's
   * attention across the model, where layers differ (ShadowKV's `denseLayers` attend every token).
   */
  stepAttendedTokens: number;
  /** Selected tokens per (row, kv head) at the last decode call, averaged. */
  lastSelectedTokens: number;
  /** First compressions (prefill-style factorization) run. */
  compressions: number;
  /** Compactions of recent tokens into the compressed store. */
  compactions: number;
  /** The policy's own counters (e.g. ShadowKV's `compressions`, a plugin's evictions); saved in snapshots. */
  policy: Record<string, number>;
}

/**
 * The attention + KV cache of a model, per layer. The host does projections, norms and MLP;
 * calls are synchronous once the cache exists.
 */
export interface KVCachePolicy extends Disposable {
  readonly name: string;
  readonly spec: ResolvedSpec;
  /** Rows (sequences) the cache holds: a call's `sequence` is one of 0 .. batch - 1. */
  readonly batch: number;
  /** Stores a prompt (or continuation) for `layer`; returns attention outputs `[rows, queryHeads, tokens, headDim]` when queries are given. */
  prefill(layer: number, input: PrefillInput): Tensor | undefined;
  prefill(layer: number, input: PrefillInput<AnyTensor> & { queries: DeviceTensor }): DeviceTensor;
  prefill(layer: number, input: PrefillInput<AnyTensor>): Tensor | DeviceTensor | undefined;
  /** Appends one token per row for `layer` and returns its attention output `[rows, queryHeads, 1, headDim]`, where `DecodeOptions.out` says. */
  decode(layer: number, input: DecodeInput, options?: DecodeOptions): Tensor;
  decode(layer: number, input: DecodeInput<AnyTensor>, options: DecodeOptions<DeviceTensor> & { out: DeviceTensor }): DeviceTensor;
  decode(layer: number, input: DecodeInput<AnyTensor>, options: DecodeOptions & { out: TensorData }): Tensor;
  decode(layer: number, input: DecodeInput<DeviceTensor>, options?: DecodeOptions<never>): DeviceTensor;
  decode(layer: number, input: DecodeInput<AnyTensor>, options?: DecodeOptions<TensorData | DeviceTensor>): Tensor | DeviceTensor;
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
