import type { BackendInfo } from '../backends/Backend.js';
import { at, type Device, type DeviceBuffer, type View } from '../backends/Device.js';
import { COUNTER, COUNTERS, COUNTERS_V2, widenCounters, type LayerStep, type StepGeometry, type StepRow } from '../backends/LayerStep.js';
import { resolveBackendSync } from '../backends/registry.js';
import { CACHE_CONFIG_KEYS, checkKeys, resolveCacheOptions, type CacheOptions, type ResolvedCacheOptions } from '../config.js';
import { DeviceTensor } from '../DeviceTensor.js';
import { DTYPE_BYTES, hostArray } from '../dtype.js';
import { CapacityError } from '../errors/CapacityError.js';
import { ConfigError } from '../errors/ConfigError.js';
import { DisposedError } from '../errors/DisposedError.js';
import { DTypeError } from '../errors/DTypeError.js';
import { OutOfMemoryError } from '../errors/OutOfMemoryError.js';
import { ReentrancyError } from '../errors/ReentrancyError.js';
import { ShapeError } from '../errors/ShapeError.js';
import { estimateMemory, type MemoryEstimate } from '../estimateMemory.js';
import { encodeSnapshot } from '../snapshot.js';
import { growCapacity } from './capacity.js';
import { int, need, record, stored } from './snapshotChecks.js';
import { resolveSpec, ropeFrequencies, type ModelSpec, type ResolvedSpec } from '../spec.js';
import { numel, type DType, type Tensor, type TensorData } from '../tensor.js';
import { appendToken, decodeLayerComposed } from './decodeLayer.js';
import { ExactRegion } from './ExactRegion.js';
import type { AnyTensor, DecodeInput, DecodeOptions, KVCachePolicy, MemoryReport, PolicyStats, PrefillInput } from './KVCachePolicy.js';
import { deviceRoom, preflight } from './preflight.js';
import { range } from './range.js';
import {
  badValue, capture, captureInput, checkDeviceValues, checkLayer, checkLimit, checkOut, checkSameDtype, checkSequence, checkSequences, checkTensor,
  checkValues, fmt, onDevice, overlaps, recheckSizes, type Input, type ValueRole,
} from './validate.js';

/** A decode step's inputs as host arrays, and the bounds of their values' checks (in DECODE_INPUT_KEYS' order). */
type HostInputs = { readonly query: Tensor; readonly key: Tensor; readonly value: Tensor };
type Limits = [number, number, number];

/** (layer, row) states one cache may hold: each is a handful of objects and buffers. */
const MAX_ROWS = 65536;

// The keys decode reads from its arguments (in the order the one-pass check reads them: Device.stageStepInputs),
// and what each input is to the value checks (prefill's too).
const DECODE_INPUT_KEYS = ['query', 'key', 'value'] as const;
const DECODE_OPTION_KEYS = ['sequences', 'out', 'checkValues'] as const;
const DECODE_ROLES = { query: 'input', key: 'key', value: 'value' } as const;
const PREFILL_ROLES = { keys: 'key', values: 'value', queries: 'input' } as const;

/** The key of the method that refills a fresh cache from a snapshot: loadCache's, not the package's (index.ts does not export it). */
export const RESTORE = Symbol('shadowkv.restore');

/** What every cache constructor takes: the model's geometry, the cache options, the backend. */
export interface CacheConfig extends CacheOptions {
  spec: ModelSpec;
  /**
   * Which runtime, by name: `'auto'` (default), `'wasm'`, `'cuda'`, or a registered one. A
   * constructor needs it loaded already (`await ready()`), except wasm under Node, which loads on the spot.
   */
  backend?: string;
}

/** @internal A started runtime, as `createCache` hands it to a constructor. */
export interface Runtime {
  device: Device;
  info: BackendInfo;
}

/** What every policy keeps per (layer, sequence): the token count and the exact tail. */
export interface SequenceState {
  length: number;
  tail: ExactRegion;
}

/** Per-head key and value rows (contiguous, stride headDim) that prefill attention reads. */
export interface AttentionRows {
  /** Rows stored before the ones the prefill call writes (which follow them). */
  count: number;
  k(h: number): View;
  v(h: number): View;
  release(): void;
}

/** A saved row after its checks. */
export interface SavedRow {
  length: number;
  /** `positions`: of the rows an eviction kept, `[kvHeads][kept]` (empty: none evicted). */
  tail: { count: number; k: TensorData; v: TensorData; positions: Int32Array };
  /** The policy's own fields, checked by `checkSavedState`. */
  extra: Record<string, unknown>;
}

/** The part of a step row a policy decides. */
export type RowPlan = Pick<StepRow, 'store' | 'compact'>;

/** What a policy's `attendDecode` read for one row, summed over kv heads: it feeds `stats()`. */
export interface Attended {
  /** Tokens attended. */
  tokens: number;
  /** Of those, tokens the policy selected (chunks or tokens chosen by score). */
  selected?: number;
  /** Selected chunks already on the device / moved there for this step. */
  hits?: number;
  misses?: number;
}

/**
 * Does once what every policy needs: input validation (nothing changes before every check
 * passed), RoPE at each token's position, the exact tail, the layer step (one runtime call on a
 * backend that fuses it), dense attention, lifetimes, snapshots. A policy overrides the hooks.
 */
export abstract class BaseKVCache<S extends SequenceState = SequenceState> implements KVCachePolicy {
  abstract readonly name: string;
  readonly spec: ResolvedSpec;
  readonly batch: number;
  readonly dtype: DType;
  /** The backend this cache runs on, and why it was chosen. */
  readonly backendInfo: BackendInfo;
  protected readonly cacheOptions: ResolvedCacheOptions;
  /** Whether maxTokens was given (the creation preflight checks only a declared size). */
  private readonly sizedByMaxTokens: boolean;
  protected readonly device: Device;
  /** Query heads per kv head. */
  protected readonly group: number;
  protected readonly invFreq: DeviceBuffer; // [d/2] f64
  protected readonly states: S[][]; // [layer][sequence]
  private readonly counters: DeviceBuffer[]; // [layer] f64 [COUNTERS]
  /** Host q | k | v of a decode step, packed for one upload (reused). */
  private packed?: TensorData;
  /** Per io dtype, the bounds of a decode step's q, k and v (`stageInputs`; made once, not per step). */
  private readonly stepLimits: Partial<Record<DType, Limits>> = {};
  /**
   * Per layer, a host copy of `counters` that the steps of a policy with its own attention
   * (`attendDecode`) keep current: read once, then only written, since on CUDA each read waits for
   * the GPU. Dropped where anything else may write the device copy (`layerCounters`, `restore`).
   */
  private readonly hostCounters: (Float64Array | undefined)[] = [];
  private readonly inputOf: Int32Array; // [batch] row of the step input, or -1
  /** Device tensors made through this cache (`allocTensor`, `wrapTensor`, prefill outputs): retired at dispose. */
  private readonly tensors = new Set<DeviceTensor>();
  /** Per layer, the device tensor the last decode returned (the cache's memory, replaced by the next decode of the layer). */
  private readonly outputs: (DeviceTensor | undefined)[] = [];
  private lastLayer = -1;
  /** The step geometry (`stepGeometry()`), made at the first decode: it reads only what construction fixed. */
  private geometry?: StepGeometry;
  private disposed = false;
  private busy: string | undefined;

  /**
   * @param policyKeys the option names the subclass accepts in `config` besides the cache's own.
   * @param runtime internal: a started runtime (from `createCache`); otherwise `config.backend` is resolved synchronously.
   */
  constructor(config: CacheConfig, policyKeys: readonly string[] = [], runtime?: Runtime) {
    // NOTE: the keys listed apart: through createCache, the policy's go in `options` and the cache's beside it.
    const own = policyKeys.length ? `${new.target.name}'s own: ${policyKeys.join(', ')}` : `${new.target.name} has none of its own`;
    checkKeys(new.target.name, config, [...CACHE_CONFIG_KEYS, ...policyKeys], `${own} (createCache's options); every cache's: ${CACHE_CONFIG_KEYS.join(', ')}`);
    refuseAsyncHooks(new.target.name, this);
    refusePromiseResults(new.target.name, this);
    this.spec = resolveSpec(config.spec);
    this.cacheOptions = resolveCacheOptions({ batch: config.batch, dtype: config.dtype, maxTokens: config.maxTokens });
    this.sizedByMaxTokens = config.maxTokens !== undefined;
    this.batch = this.cacheOptions.batch;
    this.dtype = this.cacheOptions.dtype;
    this.group = this.spec.queryHeads / this.spec.kvHeads;
    if (this.spec.layers * this.batch > MAX_ROWS) {
      throw new ConfigError(`${new.target.name}: spec.layers x batch = ${this.spec.layers * this.batch} (layer, row) states is more than ${MAX_ROWS}; use fewer rows per cache`);
    }
    let rt = runtime;
    if (!rt) {
      const { backend, info } = resolveBackendSync(config.backend);
      rt = { device: backend.createDevice(), info };
    }
    this.device = rt.device;
    this.backendInfo = rt.info;
    this.inputOf = new Int32Array(this.batch);
    try {
      this.device.checkSpec?.(this.spec);
      this.preflight(config);
      this.invFreq = this.device.alloc(this.spec.headDim / 2, 'f64', 'rope');
      this.device.write(at(this.invFreq), ropeFrequencies(this.spec.headDim, this.spec.rope));
      this.counters = Array.from({ length: this.spec.layers }, () => {
        const c = this.device.alloc(COUNTERS, 'f64', 'counters');
        this.device.write(at(c), new Float64Array(COUNTERS));
        return c;
      });
      this.states = Array.from({ length: this.spec.layers }, () =>
        Array.from({ length: this.batch }, () => ({ length: 0, tail: new ExactRegion(this.device, this.spec.kvHeads, this.spec.headDim, this.dtype, 'exactTail', this.cacheOptions.maxTokens) }) as S),
      );
    } catch (err) {
      this.device.dispose();
      throw err;
    }
  }

  /**
   * Refuses a cache whose rows, each at maxTokens, would not fit what the device has left
   * (`OutOfMemoryError` before anything is allocated; devices that do not know their room are not checked).
   */
  private preflight(config: CacheConfig): void {
    // NOTE: only a declared size is checked: storage grows on demand, so a cache left at the default
    // maxTokens (256K) is only as large as what is put in it, and a failed growth is a typed error too.
    if (!this.sizedByMaxTokens) return;
    const room = deviceRoom(this.device);
    if (!room) return;
    const estimate = (batch: number, tokens: number) => this.memoryNeed(config, batch, tokens);
    preflight(this.constructor.name, { batch: this.batch, maxTokens: this.cacheOptions.maxTokens }, estimate, room, this.memoryKnobs(config));
  }

  // ---- hooks ----

  /**
   * Memory of `batch` rows of `tokens` tokens each, for the creation preflight: the base class keeps
   * every token exact (the dense estimate). A policy that stores less overrides it.
   * NOTE: runs inside the base constructor: use `config`, `this.spec` and `this.dtype` only.
   */
  protected memoryNeed(config: CacheConfig, batch: number, tokens: number): MemoryEstimate {
    void config;
    return estimateMemory({ spec: this.spec, policy: 'full', tokens, batch, dtype: this.dtype, maxTokens: tokens });
  }

  /** Options that size the device tier, named by the preflight's advice (e.g. `'budget or rank'`). Runs inside the base constructor, as memoryNeed. */
  protected memoryKnobs(config: CacheConfig): string {
    void config;
    return '';
  }


  /**
   * Geometry of the layer step; a sparse policy fills in its chunking and budget. Read once, at the
   * first decode (then kept): it may depend only on what the constructor fixed (spec, dtype, options).
   */
  protected stepGeometry(): StepGeometry {
    const { queryHeads, kvHeads, headDim, scale, rope } = this.spec;
    return { queryHeads, kvHeads, headDim, chunkSize: 1, maxSelected: 0, maxOutliers: 0, localTokens: 0, scale, scoreScale: scale, ropeStyle: rope.style, invFreq: this.invFreq, dtype: this.dtype };
  }

  /**
   * The policy's part of a row's step, decided before it runs (compress, make room): `active` rows
   * take a token this step. The default attends the exact tail.
   */
  protected planRow(_layer: number, _seq: number, _active: boolean): RowPlan {
    return { compact: false };
  }

  /** Work due before a step on `seqs` (e.g. compressing rows whose prompt is in); on failure nothing may have changed. */
  protected beforeStep(_layer: number, _seqs: readonly number[]): void {}

  /**
   * Mirrors what the step did to a row's state beyond the appended token (e.g. compaction), once
   * every row's token is committed; as `afterPrefill`, it must not fail (defer what can).
   */
  protected afterStep(_layer: number, _seq: number, _row: StepRow): void {}

  /**
   * Optional: a policy that computes decode attention itself (a plugin) defines this; the step then
   * runs op by op. q `[Hq, d]` f32 post-RoPE of row `seq` (its token already appended) → out `[Hq, d]` f32.
   * Returns what it read, which `stats()` reports.
   */
  protected attendDecode?(layer: number, seq: number, q: View, out: View): Attended;

  /**
   * Every stored token's key and value rows and `pending` written after them, in position order, for
   * prefill attention: the default is the exact tail's rows (after an eviction, only the kept ones).
   */
  protected attentionRows(layer: number, seq: number, _pending: number): AttentionRows {
    const { tail } = this.states[layer]![seq]!;
    return { count: tail.count, k: (h) => tail.headK(h), v: (h) => tail.headV(h), release: () => {} };
  }

  /** Runs at the start of a prefill call, once its inputs are checked and before anything is written. */
  protected beforePrefill(_layer: number): void {}

  /**
   * Optional: sees the post-RoPE queries of a prefill call that has them, per kv head h, while the
   * call's rows are written but not committed: `queries` f32 `[group, S, d]`, the row's stored rows
   * and the S new ones after them in `rows`. A policy choosing tokens by the prompt's queries
   * (SnapKV) scores here and evicts in `afterPrefill`, once every row of the call succeeded.
   */
  protected observeQueries?(layer: number, seq: number, h: number, queries: View, S: number, rows: AttentionRows): void;

  /**
   * Runs after a prefill call per sequence, once every row's tokens are committed: the call is done,
   * so work here that can fail (an allocation) defers itself instead (as `afterStep`).
   */
  protected afterPrefill(_layer: number, _seq: number): void {}

  /** The first position from which the exact tail holds every token (before it: compressed or evicted); `crop` stops there. */
  protected tailStart(state: S): number {
    return state.tail.start;
  }

  /**
   * Runs after `crop` dropped a row's tokens past its new length, per layer: what the policy derived
   * from those tokens (chunk summaries, a pending vote) must go with them before the next step reads it.
   */
  protected afterCrop(_state: S): void {}

  /** Empties a sequence's state beyond the tail (reset, dispose): free its buffers here. */
  protected clearState(_state: S): void {}

  /** Frees what the policy holds beyond its rows' states (called once, at dispose). */
  protected disposePolicy(): void {}

  /** Extra per-sequence state for snapshots. */
  protected saveState(_state: S): Record<string, unknown> {
    return {};
  }

  protected loadState(_state: S, _saved: Record<string, unknown>): void {}

  /** Policy options, recorded in snapshots. */
  abstract policyOptions(): Record<string, unknown>;

  /** The layer's step counters (f64 `[COUNTERS]`, on the device). */
  protected layerCounters(layer: number): DeviceBuffer {
    this.hostCounters[layer] = undefined; // the caller may change them on the device
    return this.counters[layer]!;
  }

  /** The policy's own counters (non-negative integers): reported by `stats().policy` and kept in snapshots. */
  protected saveCounters(): Record<string, number> {
    return {};
  }

  protected loadCounters(_counters: Record<string, number>): void {}

  // ---- the contract ----

  prefill(layer: number, input: PrefillInput): Tensor | undefined;
  prefill(layer: number, input: PrefillInput<AnyTensor> & { queries: DeviceTensor }): DeviceTensor;
  prefill(layer: number, input: PrefillInput<AnyTensor>): Tensor | DeviceTensor | undefined;
  prefill(layer: number, input: PrefillInput<AnyTensor>): Tensor | DeviceTensor | undefined {
    const call = `prefill(layer ${fmt(layer)})`;
    return this.run(call, () => {
      checkLayer(call, layer, this.spec.layers);
      const { kvHeads: Hkv, queryHeads: Hq, headDim: d } = this.spec;
      const raw = capture(call, 'input', input ?? null, ['keys', 'values', 'queries', 'sequences'] as const, true);
      const keys = captureInput(call, 'keys', raw.keys, [-1, Hkv, -1, d], this.device);
      checkTensor(call, 'keys', keys, [-1, Hkv, -1, d], () => `spec has ${Hkv} kv heads of dim ${d}`);
      const [rows, , S] = keys.shape as [number, number, number, number];
      const values = captureInput(call, 'values', raw.values, [rows, Hkv, S, d], this.device);
      checkTensor(call, 'values', values, [rows, Hkv, S, d], () => 'values must match keys');
      const queries = raw.queries === undefined ? undefined : captureInput(call, 'queries', raw.queries, [rows, Hq, S, d], this.device);
      if (queries) checkTensor(call, 'queries', queries, [rows, Hq, S, d], () => `spec has ${Hq} query heads and keys hold ${S} tokens`);
      const inputs = { keys, values, queries };
      checkSameDtype(call, inputs);
      // Row indices are read (copied) before the data is checked: no getter runs after the checks.
      const seqs = checkSequences(call, raw.sequences, rows, this.batch);
      recheckSizes(call, inputs);
      this.checkInputValues(call, inputs, PREFILL_ROLES);
      seqs.forEach((s) => this.checkCapacity(call, layer, s, S));

      // Every row's tokens are written (uncommitted) and attended first; only then are they committed,
      // so a failure on any row leaves every row as it was. Device queries get a device output, made first.
      const shape = [rows, Hq, S, d];
      const out = !queries ? undefined : onDevice(queries) ? this.newTensor(shape, keys.dtype, 'caller') : hostArray(keys.dtype, rows * Hq * S * d);
      this.beforePrefill(layer);
      try {
        seqs.forEach((s, i) => {
          const st = this.states[layer]![s]!;
          this.writePrompt(st, keys, values, i, S);
          if (queries && out) this.prefillAttention(layer, s, queries, i, S, out);
        });
      } catch (err) {
        if (out instanceof DeviceTensor) out.dispose();
        throw err;
      }
      seqs.forEach((s) => {
        const st = this.states[layer]![s]!;
        st.tail.commit(S);
        st.length += S;
      });
      try {
        this.hooksAfter(call, 'afterPrefill', COMMITTED, seqs.map((s) => [s, s]), (s) => this.afterPrefill(layer, s));
      } catch (err) {
        if (out instanceof DeviceTensor) out.dispose(); // never handed out
        throw err;
      }
      return out === undefined || out instanceof DeviceTensor ? out : { data: out, shape, dtype: keys.dtype };
    });
  }

  decode(layer: number, input: DecodeInput, options?: DecodeOptions): Tensor;
  decode(layer: number, input: DecodeInput<AnyTensor>, options: DecodeOptions<DeviceTensor> & { out: DeviceTensor }): DeviceTensor;
  decode(layer: number, input: DecodeInput<AnyTensor>, options: DecodeOptions & { out: TensorData }): Tensor;
  decode(layer: number, input: DecodeInput<DeviceTensor>, options?: DecodeOptions<never>): DeviceTensor;
  decode(layer: number, input: DecodeInput<AnyTensor>, options?: DecodeOptions<TensorData | DeviceTensor>): Tensor | DeviceTensor;
  decode(layer: number, input: DecodeInput<AnyTensor>, options?: DecodeOptions<TensorData | DeviceTensor>): Tensor | DeviceTensor {
    const call = `decode(layer ${fmt(layer)})`;
    return this.run(call, () => {
      checkLayer(call, layer, this.spec.layers);
      const { kvHeads: Hkv, queryHeads: Hq, headDim: d } = this.spec;
      const raw = capture(call, 'input', input ?? null, DECODE_INPUT_KEYS, true);
      const opts = capture(call, 'options', options, DECODE_OPTION_KEYS, true);
      const R = Array.isArray(opts.sequences) ? opts.sequences.length : this.batch;
      const seqs = checkSequences(call, opts.sequences, R, this.batch);
      // NOTE: the shape errors' reasons are worded only when one is thrown, and by no named closure
      // (tsx's keepNames names each one made): a step's JavaScript is per token.
      const qShape = [R, Hq, 1, d], kvShape = [R, Hkv, 1, d];
      const query = captureInput(call, 'query', raw.query, qShape, this.device);
      checkTensor(call, 'query', query, qShape, () => `${this.rowsSaid(opts.sequences, R)} and spec has ${Hq} query heads of dim ${d}`);
      const key = captureInput(call, 'key', raw.key, kvShape, this.device);
      checkTensor(call, 'key', key, kvShape, () => `${this.rowsSaid(opts.sequences, R)} and spec has ${Hkv} kv heads of dim ${d}`);
      const value = captureInput(call, 'value', raw.value, kvShape, this.device);
      checkTensor(call, 'value', value, kvShape, () => 'value must match key');
      const inputs = { query, key, value }; // NOTE: one object for every check below: a step's JavaScript is per token
      checkSameDtype(call, inputs);
      const dtype = query.dtype;
      const out = opts.out;
      if (out !== undefined) checkOut(call, out, dtype, R * Hq * d, this.device, inputs);
      // With no out, a device query gets this layer's output buffer, which must not be one of the inputs.
      const own = out === undefined && onDevice(query);
      const previous = this.outputs[layer];
      if (own && previous && !previous.disposed) {
        for (const name in inputs) {
          const t = inputs[name as keyof typeof inputs];
          if (onDevice(t) && overlaps(t, previous)) throw new ShapeError(`${call}: ${name} is (or overlaps) the output of this layer's previous decode, which this step overwrites; copy it, or pass out`);
        }
      }
      if (opts.checkValues !== undefined && typeof opts.checkValues !== 'boolean') throw new ConfigError(`${call}: options.checkValues must be a boolean, got ${fmt(opts.checkValues)}`);
      recheckSizes(call, inputs, out !== undefined && !(out instanceof DeviceTensor) ? { data: out, n: R * Hq * d } : undefined);
      const hostStep = this.takesHostInputs(inputs);
      if (hostStep && this.device.stageStepInputs) this.stageInputs(call, inputs, opts.checkValues !== false);
      else if (opts.checkValues !== false) this.checkInputValues(call, inputs, DECODE_ROLES);
      for (const s of seqs) this.checkCapacity(call, layer, s, 1);
      // A device out, or this layer's own output buffer. The previous output is retired once this step
      // runs (a rejected call leaves it readable), or now where the buffer grew and so freed its memory.
      const outView = out instanceof DeviceTensor ? out.viewFor(this.device, call, 'out') : own ? at(this.device.scratch(`decode.out.${layer}`, R * Hq * d, dtype)) : undefined;
      if (own && previous && !previous.disposed && previous.dtype === dtype && previous.viewFor(this.device, call, 'out').buf !== outView!.buf) previous.invalidate();

      // Inputs staged (host arrays) or taken in place (device tensors): before the work due, so that
      // the staging buffers a first step makes cannot fail after a row was compressed.
      const io = this.stepInputs(inputs, hostStep, dtype, R * Hq * d, outView);
      // The step: work due first (the policy may compress rows), each row's plan and room for its token.
      this.inputOf.fill(-1);
      for (let i = 0; i < seqs.length; i++) this.inputOf[seqs[i]!] = i;
      this.beforeStep(layer, seqs);
      const rows = this.states[layer]!.map((st, b): StepRow => {
        const active = this.inputOf[b]! >= 0;
        if (active) st.tail.reserve(1);
        const { store, compact } = this.planRow(layer, b, active); // NOTE: not spread: a step's JavaScript is per token
        return { input: this.inputOf[b]!, position: st.length, tail: { k: st.tail.k, v: st.tail.v, capacity: st.tail.capacity, count: st.tail.count }, store, compact };
      });
      // NOTE: io's fields named, not spread (as the rows' plans above).
      const step: LayerStep = { geometry: (this.geometry ??= this.stepGeometry()), ioDtype: dtype, q: io.q, k: io.k, v: io.v, hostInputs: io.hostInputs, out: io.out, counters: this.counters[layer]!, rows };
      // 1-5: one runtime call where the backend fuses the step, else its ops one by one.
      if (this.attendDecode) this.decodeWithHook(layer, step);
      else if (this.device.decodeLayer) this.device.decodeLayer(step);
      else decodeLayerComposed(this.device, step);
      if (own) previous?.invalidate();
      this.lastLayer = layer;
      for (const s of seqs) {
        const st = this.states[layer]![s]!;
        st.length += 1;
        st.tail.count += 1;
      }
      this.hooksAfter(call, 'afterStep', COMMITTED, seqs.map((s) => [s, s]), (s) => this.afterStep(layer, s, rows[s]!));
      const shape = [R, Hq, 1, d];
      if (out instanceof DeviceTensor) return out;
      if (own) return (this.outputs[layer] = new DeviceTensor(this.device, step.out, shape, dtype, 'cache'));
      const data = this.device.read(step.out as View & { buf: { dtype: 'f32' } }, R * Hq * d, out as Float32Array | undefined) as TensorData;
      return { data, shape, dtype };
    });
  }

  /**
   * Runs a policy hook that follows a change already made (`done` says what) on every (sequence, item),
   * even where it throws for one (itself, or by calling back into the cache), so that the rows agree;
   * then throws the first failure as a ConfigError that says the change is in, since a repeated call
   * would make it twice.
   */
  private hooksAfter<T>(call: string, hook: string, done: string, items: [seq: number, item: T][], run: (item: T) => void): void {
    let failed: ConfigError | undefined;
    for (const [seq, item] of items) {
      try {
        run(item);
      } catch (err) {
        // A ConfigError already names the hook's fault (e.g. a promise it returned): kept as it is.
        const what = err instanceof Error ? `${err.name}: ${err.message}` : fmt(err);
        failed ??= err instanceof ConfigError ? err : new ConfigError(`${call}: ${done}, but the ${this.name} policy's ${hook} threw for sequence ${seq}: ${what}. ${hook} runs once the change is made, so it must not fail: defer what can fail to a later call, and make no call on this cache from it`);
      }
    }
    if (failed) throw failed;
  }

  /** Where decode's row count `R` came from, for its shape errors. */
  private rowsSaid(sequences: unknown, R: number): string {
    return sequences !== undefined ? `${R} sequences were named` : `the cache holds ${this.batch} rows`;
  }

  /**
   * A device tensor on this cache's backend (CUDA: GPU memory; wasm: this cache's heap) that you
   * own: `dispose()` frees it, and the cache's `dispose()` frees what is left. Filled from `data`
   * when given; otherwise write it before reading (CUDA zeroes it, wasm does not).
   * @example
   * const query = cache.allocTensor([1, 32, 1, 128], 'bf16');
   * query.write(bits); // or let a GPU kernel of yours write at query.address
   */
  allocTensor(shape: readonly number[], dtype: DType, data?: TensorData): DeviceTensor {
    return this.run('allocTensor()', () => {
      const dims = checkNewTensor('allocTensor()', shape, dtype);
      const t = this.newTensor(dims, dtype, 'caller');
      try {
        if (data !== undefined) t.write(data);
      } catch (err) {
        t.dispose();
        throw err;
      }
      return t;
    });
  }

  /**
   * A device tensor over memory the host loop owns (CUDA: a device pointer of this GPU, e.g. from a
   * cudaMalloc of its own); the SDK never frees it. `ConfigError` where the backend cannot use
   * foreign memory (wasm: use `allocTensor`). NOTE: the cache queues its work on CUDA's legacy
   * default stream; a loop that writes the memory on a non-blocking stream must synchronize first.
   */
  wrapTensor(address: number, shape: readonly number[], dtype: DType): DeviceTensor {
    return this.run('wrapTensor()', () => {
      const dims = checkNewTensor('wrapTensor()', shape, dtype);
      if (!this.device.wrap) throw new ConfigError(`wrapTensor(): the ${this.backendInfo.name} backend cannot use memory it did not allocate; make the tensor with allocTensor()`);
      if (!Number.isSafeInteger(address) || address <= 0) throw new ConfigError(`wrapTensor(): address must be a positive integer (a device pointer), got ${fmt(address)}`);
      // NOTE: a kernel's load of a misaligned element would end the process's CUDA context.
      if (address % DTYPE_BYTES[dtype] !== 0) throw new ConfigError(`wrapTensor(): address 0x${address.toString(16)} is not a multiple of ${DTYPE_BYTES[dtype]}, the bytes of a ${dtype} element`);
      const buf = this.device.wrap(address, numel(dims), dtype);
      const t: DeviceTensor = new DeviceTensor(this.device, at(buf), dims, dtype, 'external', () => this.tensors.delete(t));
      this.tensors.add(t);
      return t;
    });
  }

  /** A device tensor over a new buffer of this device (tag `tensor`), freed by its `dispose()` or the cache's. */
  private newTensor(shape: readonly number[], dtype: DType, owner: 'caller'): DeviceTensor {
    const buf = this.device.alloc(numel(shape), dtype, 'tensor');
    const t: DeviceTensor = new DeviceTensor(this.device, at(buf), shape, dtype, owner, () => {
      this.tensors.delete(t);
      this.device.free(buf);
    });
    this.tensors.add(t);
    return t;
  }

  /**
   * The value checks (`checkValues`) of a call's inputs (absent ones skipped), each as `roles` names
   * it: host ones in JS, device ones together on the device. Stored inputs must fit the cache's dtype.
   */
  private checkInputValues<K extends string>(call: string, inputs: Record<K, Input | undefined>, roles: Readonly<Record<K, ValueRole>>): void {
    const onDev: { name: string; t: DeviceTensor; storage: DType | undefined; role: ValueRole }[] = [];
    for (const name in inputs) {
      const t = inputs[name];
      if (!t) continue;
      const role = roles[name];
      const storage = this.storageFor(role);
      if (onDevice(t)) onDev.push({ name, t, storage, role });
      else checkValues(call, name, t, storage, role, this.device);
    }
    checkDeviceValues(call, this.device, onDev);
  }

  /** Bytes of one chunk of one kv head's values on the host tier (what a miss moves). */
  protected hostChunkBytes(): number {
    return this.stepGeometry().chunkSize * this.spec.headDim * DTYPE_BYTES[this.dtype];
  }

  /** Tokens stored for a row at a layer (default 0), or the longest row when `sequence` is omitted. */
  length(sequence?: number, layer = 0): number {
    return this.run('length()', () => {
      checkLayer('length()', layer, this.spec.layers);
      if (sequence === undefined) return this.states[layer]!.reduce((most, st) => Math.max(most, st.length), 0);
      checkSequence('length()', sequence, this.batch);
      return this.states[layer]![sequence]!.length;
    });
  }

  /**
   * Rolls a row back to its first `length` tokens at every layer (speculative decoding: drop the
   * rejected draft tokens). Only exact tokens can be dropped: a row's compressed prefix stays.
   */
  crop(sequence: number, length: number): void {
    const call = `crop(${fmt(sequence)}, ${fmt(length)})`;
    this.run(call, () => this.cropRow(call, sequence, length));
  }

  private cropRow(call: string, sequence: number, length: number): void {
    checkSequence(call, sequence, this.batch);
    this.states.forEach((row, l) => {
      const st = row[sequence]!;
      if (!Number.isInteger(length) || length < 0 || length > st.length) {
        throw new CapacityError(`${call}: length must be an integer in [0, ${st.length}] (the row's tokens at layer ${l})`);
      }
      const first = this.tailStart(st);
      if (length < first) {
        throw new CapacityError(`${call}: layer ${l} holds tokens before ${first} compressed or evicted; only exact tokens can be cropped, so length must be >= ${first} (reset() and prefill again to go further back)`);
      }
    });
    // Every layer is cropped before the hooks run, and every layer's hook runs: a hook that throws
    // cannot leave the row's layers at different lengths.
    for (const row of this.states) {
      const st = row[sequence]!;
      st.tail.cropTo(length);
      st.length = length;
    }
    this.hooksAfter(call, 'afterCrop', `the row is cropped to ${length} tokens at every layer`, this.states.map((row) => [sequence, row[sequence]!]), (st) => this.afterCrop(st));
  }

  reset(sequence?: number): void {
    this.run('reset()', () => {
      if (sequence !== undefined) checkSequence('reset()', sequence, this.batch);
      const named = this.states.flatMap((row) => row.flatMap((st, s): [number, S][] => (sequence === undefined || s === sequence ? [[s, st]] : [])));
      // NOTE: every row named is emptied even where the policy's clearState throws for one: a row whose
      // policy state was freed but whose tail and length were kept would trap at its next step.
      try {
        this.hooksAfter('reset()', 'clearState', 'every row named is emptied', named, (st) => this.clearState(st));
      } finally {
        for (const [, st] of named) {
          st.tail.clear();
          st.length = 0;
        }
      }
    });
  }

  memory(): MemoryReport {
    return this.run('memory()', () => this.memoryReport());
  }

  private memoryReport(): MemoryReport {
    const tokens = this.states.flat().reduce((n, st) => n + st.length, 0);
    const dense = tokens * 2 * this.spec.kvHeads * this.spec.headDim * DTYPE_BYTES[this.dtype];
    return { ...this.device.memory(), dense };
  }

  stats(): PolicyStats {
    return this.run('stats()', () => this.readStats());
  }

  private readStats(): PolicyStats {
    const read = (l: number) => this.device.read(at(this.counters[l]!) as View & { buf: { dtype: 'f64' } }, COUNTERS);
    const layers = Array.from({ length: this.spec.layers }, (_, l) => read(l));
    const total = new Float64Array(COUNTERS);
    let attended = 0, decoded = 0;
    for (const c of layers) {
      c.forEach((v, i) => (total[i]! += v));
      if (c[COUNTER.steps]! === 0) continue;
      attended += c[COUNTER.lastAttendedTokens]! / Math.max(c[COUNTER.lastHeads]!, 1);
      decoded += 1;
    }
    const last = layers[this.lastLayer] ?? new Float64Array(COUNTERS);
    const heads = Math.max(last[COUNTER.lastHeads]!, 1);
    const hits = total[COUNTER.hits]!, misses = total[COUNTER.misses]!, hot = total[COUNTER.hotHits]!;
    const chunkBytes = this.hostChunkBytes();
    return {
      steps: total[COUNTER.steps]!,
      lastHits: last[COUNTER.lastHits]!,
      lastMisses: last[COUNTER.lastMisses]!,
      lastHotHits: last[COUNTER.lastHotHits]!,
      hitRate: hits + misses ? hits / (hits + misses) : 0,
      hotHitRate: misses ? hot / misses : 0,
      lastBytesFetched: (last[COUNTER.lastMisses]! - last[COUNTER.lastHotHits]!) * chunkBytes,
      bytesFetched: (misses - hot) * chunkBytes,
      lastAttendedTokens: last[COUNTER.lastAttendedTokens]! / heads,
      stepAttendedTokens: decoded ? attended / decoded : 0,
      lastSelectedTokens: last[COUNTER.lastSelectedTokens]! / heads,
      compressions: this.saveCounters().compressions ?? 0,
      compactions: total[COUNTER.compactions]!,
      policy: this.saveCounters(),
    };
  }

  /** Snapshot content (the envelope and checksum are added by `save`). */
  protected snapshot(): Record<string, unknown> {
    return {
      policy: this.name,
      spec: this.spec,
      // NOTE: a maxTokens left at its default is not recorded: loadCache would take it as declared and
      // check batch x 256K tokens against the device, which a cache that grows on demand never was.
      cache: this.sizedByMaxTokens ? this.cacheOptions : { batch: this.batch, dtype: this.dtype },
      options: this.policyOptions(),
      counters: { ...this.savedCounters(), lastLayer: this.lastLayer },
      layerCounters: this.counters.map((c) => this.device.read(at(c) as View & { buf: { dtype: 'f64' } }, COUNTERS)),
      layers: this.states.map((row) => row.map((st) => ({ length: st.length, tail: this.tailSnapshot(st), ...this.savedState(st) }))),
    };
  }

  private tailSnapshot(st: S): Record<string, unknown> {
    const { tail } = st;
    return { count: tail.count, ...tail.snapshot(), ...(tail.kept ? { positions: tail.positions.slice() } : {}) };
  }

  /** The policy's counters, refused here where loadCache would refuse them (each a non-negative integer). */
  private savedCounters(): Record<string, number> {
    const counters = this.saveCounters();
    for (const [k, v] of Object.entries(counters)) {
      if (!Number.isSafeInteger(v) || v < 0) throw new ConfigError(`save(): the ${this.name} policy's counter '${k}' is ${fmt(v)}; saveCounters() must give non-negative integers, as loadCache checks`);
    }
    return counters;
  }

  /** A row's policy fields; a field `savedStateKeys` does not declare would be refused by `loadCache`, so it is refused here. */
  private savedState(st: S): Record<string, unknown> {
    const extra = this.saveState(st);
    const undeclared = Object.keys(extra).filter((k) => !this.savedStateKeys().includes(k));
    if (undeclared.length) throw new ConfigError(`save(): the ${this.name} policy saves ${undeclared.map((k) => `'${k}'`).join(', ')} but savedStateKeys() does not declare it, so loadCache could not restore it`);
    return extra;
  }

  /**
   * Refills this fresh cache from `snapshot()` content (`loadCache` only: the key is not exported
   * from the package). Every row is checked to the last field first, and the memory the content
   * implies is bounded, before anything is allocated.
   */
  [RESTORE](content: { layers: unknown[][]; counters: unknown; layerCounters: unknown[] }): void {
    this.run('loadCache', () => {
      const rows = this.states.map((row, l) => row.map((_, s) => this.checkSavedRow(content.layers[l]![s], `layers[${l}][${s}]`)));
      const counters = record(content.counters, 'counters', ['lastLayer', ...Object.keys(this.saveCounters())]);
      const lastLayer = int(counters.lastLayer, 'counters.lastLayer', -1, this.spec.layers - 1);
      for (const k of Object.keys(this.saveCounters())) int(counters[k], `counters.${k}`, 0, Number.MAX_SAFE_INTEGER);
      const layerCounters = content.layerCounters.map((c, l) => {
        need(c instanceof Float64Array && (c.length === COUNTERS || c.length === COUNTERS_V2), `layerCounters[${l}]`, `must be a Float64Array of ${COUNTERS} counters (${COUNTERS_V2} before the hot-value cache)`);
        (c as Float64Array).forEach((x, i) => need(Number.isInteger(x) && x >= 0, `layerCounters[${l}][${i}]`, `must be a non-negative integer, got ${x}`));
        return widenCounters(c as Float64Array);
      });
      const bytes = rows.flat().reduce((n, r) => n + this.restoreBytes(r), 0);
      const free = deviceRoom(this.device);
      const room = !free ? Infinity : free.shared ? free.device : free.device + free.host;
      need(bytes <= room, 'snapshot', `implies ${bytes} bytes of state, more than the ${this.backendInfo.name} backend has room for (${room})`);
      rows.forEach((row, l) =>
        row.forEach((saved, s) => {
          const st = this.states[l]![s]!;
          st.length = saved.length;
          const { count, k, v, positions } = saved.tail;
          st.tail.restore(count, k, v, saved.length - (count - positions.length / this.spec.kvHeads), positions);
          this.loadState(st, saved.extra);
        }),
      );
      layerCounters.forEach((c, l) => this.device.write(at(this.counters[l]!), c));
      this.hostCounters.length = 0;
      this.lastLayer = lastLayer;
      this.loadCounters(counters as Record<string, number>);
    });
  }

  /** A saved row: its length and tail checked here, the policy's own fields by `checkSavedState`. */
  private checkSavedRow(v: unknown, path: string): SavedRow {
    const o = record(v, path, ['length', 'tail'], this.savedStateKeys());
    const length = int(o.length, `${path}.length`, 0, this.cacheOptions.maxTokens);
    const tail = record(o.tail, `${path}.tail`, ['count', 'k', 'v'], ['positions']);
    const count = int(tail.count, `${path}.tail.count`, 0, length);
    const n = count * this.spec.kvHeads * this.spec.headDim;
    const k = stored(tail.k, `${path}.tail.k`, this.dtype, n);
    const vals = stored(tail.v, `${path}.tail.v`, this.dtype, n);
    const extra = Object.fromEntries(this.savedStateKeys().filter((key) => key in o).map((key) => [key, o[key]]));
    const compressed = this.checkSavedState(extra, path, length);
    const positions = tail.positions === undefined ? new Int32Array(0) : this.checkPositions(tail.positions, `${path}.tail.positions`, count, length);
    const kept = positions.length / this.spec.kvHeads;
    // Rows after the kept ones hold the row's last tokens, one each; the rest is compressed or was evicted.
    if (!kept) need(count === length - compressed, `${path}.tail.count`, `is ${count}, but the row holds ${length} tokens of which ${compressed} are compressed`);
    else need(compressed === 0, `${path}.tail.positions`, 'are only saved by policies that evict, which compress nothing');
    return { length, tail: { count, k, v: vals, positions }, extra };
  }

  /** Positions of rows an eviction kept: per head the same number, ascending, before the rows held in order. */
  private checkPositions(v: unknown, path: string, count: number, length: number): Int32Array {
    const Hkv = this.spec.kvHeads;
    need(v instanceof Int32Array && v.length > 0 && v.length % Hkv === 0 && v.length / Hkv <= count, path, `must be an Int32Array of ${Hkv} x (1 to ${count}) positions`);
    const kept = v.length / Hkv;
    const start = length - (count - kept);
    v.forEach((p, i) => need(p >= 0 && p < start && (i % kept === 0 || p > v[i - 1]!), `${path}[${i}]`, `is ${p}: kept positions are ascending per head and below ${start}`));
    return v;
  }

  /** Keys a saved row may hold besides `length` and `tail`. */
  protected savedStateKeys(): string[] {
    return [];
  }

  /** Checks a saved row's policy fields (`extra`); returns how many of its tokens they hold compressed. */
  protected checkSavedState(_extra: Record<string, unknown>, _path: string, _length: number): number {
    return 0;
  }

  /** Bytes restoring a checked row allocates (the tail; a policy adds its own state). */
  protected restoreBytes(row: SavedRow): number {
    const { kvHeads: Hkv, headDim: d } = this.spec;
    return 2 * Hkv * growCapacity(row.tail.count, 0, 256, this.cacheOptions.maxTokens) * d * DTYPE_BYTES[this.dtype];
  }

  save(): Uint8Array {
    return this.run('save()', () => encodeSnapshot(this.snapshot()));
  }

  dispose(): void {
    if (this.disposed) return;
    if (this.busy) throw new ReentrancyError(`dispose(): called while ${this.busy} is running on this cache; dispose after it returns`);
    // NOTE: busy while freeing: a policy's clearState or disposePolicy that calls back into the cache
    // (a step, a save, dispose again) would otherwise run on buffers already freed.
    this.busy = 'dispose()';
    try {
      // Device tensors first: yours are freed here, outputs and wrapped memory only retired.
      [...this.tensors].forEach((t) => t.dispose());
      for (const st of this.states.flat()) {
        this.clearState(st);
        st.tail.free();
      }
      this.disposePolicy();
      this.device.free(this.invFreq);
      this.counters.forEach((c) => this.device.free(c));
    } finally {
      // NOTE: also where a free threw (a lost CUDA context fails every one): no handle may outlive
      // the memory it reads, the device gives back what is left, and a second dispose() is a no-op.
      this.tensors.forEach((t) => t.invalidate());
      this.outputs.forEach((t) => t?.invalidate());
      this.device.dispose();
      this.disposed = true;
      this.busy = undefined;
    }
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  // ---- shared steps ----

  protected guard(call: string): void {
    if (this.disposed) throw new DisposedError(`${call}: this ${this.name} cache was disposed`);
  }

  /**
   * Runs one public call: after dispose() a `DisposedError`; inside another call on this cache (a
   * getter of its input, a progress callback) a `ReentrancyError`, so that no call sees another half done.
   */
  protected run<T>(call: string, body: () => T): T {
    this.guard(call);
    if (this.busy) throw new ReentrancyError(`${call}: called while ${this.busy} is running on this cache (from a getter or callback?); calls on one cache must not nest`);
    this.busy = call;
    try {
      return body();
    } finally {
      this.busy = undefined;
    }
  }

  private checkCapacity(call: string, layer: number, seq: number, tokens: number): void {
    const length = this.states[layer]![seq]!.length;
    if (length + tokens > this.cacheOptions.maxTokens) {
      throw new CapacityError(`${call}: sequence ${seq} holds ${length} tokens; ${tokens} more would pass maxTokens (${this.cacheOptions.maxTokens}); raise maxTokens or reset the row`);
    }
  }

  /**
   * The step's q, k, v and out views: host arrays written into staging buffers (the only
   * host-to-device transfer of a step), or handed to a fused step that uploads them itself
   * (`uploadsStepInputs`); device tensors in place; `out` where given, else a staging buffer read
   * back after the step.
   */
  private stepInputs(input: { readonly query: Input; readonly key: Input; readonly value: Input }, hostStep: boolean, dtype: DType, n: number, out: View | undefined): Pick<LayerStep, 'q' | 'k' | 'v' | 'out' | 'hostInputs'> {
    // An output bound for a host array goes straight to host memory where the fused step can write it there (no copy back).
    const outView = out ?? at(this.device.hostOutput && this.device.decodeLayer && !this.attendDecode
      ? this.device.hostOutput(n, dtype) : this.device.scratch('step.out', n, dtype));
    const { query, key, value } = input;
    if (!onDevice(query) && !onDevice(key) && !onDevice(value)) {
      const nq = query.data.length, nk = key.data.length;
      const total = nq + 2 * nk;
      const buf = this.device.scratch('step.qkv', total, dtype);
      const views = { q: at(buf), k: at(buf, nq), v: at(buf, nq + nk), out: outView };
      // A fused step that uploads its inputs takes the arrays as they are.
      if (hostStep) {
        return { q: views.q, k: views.k, v: views.v, out: views.out, hostInputs: [query.data, key.data, value.data] };
      }
      // Else side by side in one upload (one staged copy, not three).
      if (!this.packed || this.packed.length < total || this.packed.constructor !== query.data.constructor) {
        this.packed = new (query.data.constructor as Float32ArrayConstructor | Uint16ArrayConstructor)(total);
      }
      const packed = this.packed.subarray(0, total) as TensorData;
      packed.set(query.data as never);
      packed.set(key.data as never, nq);
      packed.set(value.data as never, nq + nk);
      this.device.write(at(buf), packed);
      return views;
    }
    const stage = (name: string, t: Input): View => {
      if (onDevice(t)) return t.viewFor(this.device, 'decode', name);
      const buf = this.device.scratch(`step.${name}`, t.data.length, dtype);
      this.device.write(at(buf), t.data);
      return at(buf);
    };
    return {
      q: stage('q', input.query),
      k: stage('k', input.key),
      v: stage('v', input.value),
      out: outView,
    };
  }

  /** Whether a step's inputs are host arrays that the device's fused step uploads itself (`uploadsStepInputs`). */
  private takesHostInputs(input: { readonly query: Input; readonly key: Input; readonly value: Input }): input is HostInputs {
    return !!this.device.uploadsStepInputs && !!this.device.decodeLayer && !this.attendDecode && !onDevice(input.query) && !onDevice(input.key) && !onDevice(input.value);
  }

  /**
   * Such inputs checked (`checks`: as checkInputValues would) and staged for the step in one native
   * pass (`Device.stageStepInputs`), before the policy's work; else they would be scanned here and
   * read again when decodeLayer copies them.
   */
  private stageInputs(call: string, inputs: HostInputs, checks: boolean): void {
    const dtype = inputs.query.dtype;
    const limits = checks ? (this.stepLimits[dtype] ??= DECODE_INPUT_KEYS.map((name) => checkLimit(dtype, this.storageFor(DECODE_ROLES[name]), DECODE_ROLES[name])) as Limits) : undefined;
    let i = this.device.stageStepInputs!([inputs.query.data, inputs.key.data, inputs.value.data], dtype, limits);
    if (i < 0) return;
    for (const name of DECODE_INPUT_KEYS) {
      const t = inputs[name];
      if (i < t.data.length) badValue(call, name, t, i, this.storageFor(DECODE_ROLES[name]), DECODE_ROLES[name]);
      i -= t.data.length;
    }
  }

  /** The dtype an input of `role` is stored in (checked to fit): none for queries. */
  private storageFor(role: ValueRole): DType | undefined {
    return role === 'input' ? undefined : this.dtype;
  }

  /** The step with a policy's own attention (`attendDecode`): append, then the hook, row by row; the layer's counters as the step keeps them. */
  private decodeWithHook(layer: number, step: LayerStep): void {
    const { queryHeads: Hq, kvHeads: Hkv, headDim: d } = this.spec;
    const t = { q: this.device.scratch('hook.q', Hq * d, 'f32'), k: this.device.scratch('hook.k', Hkv * d, 'f32'), out: this.device.scratch('hook.out', Hq * d, 'f32') };
    // NOTE: a copy, kept only once the step is through: a step that throws leaves the counters as they were.
    const c = Float64Array.from(this.hostCounters[layer] ?? this.device.read(at(step.counters) as View & { buf: { dtype: 'f64' } }, COUNTERS));
    c.fill(0, COUNTER.lastHits, COUNTERS);
    c[COUNTER.steps]! += 1;
    const add = (slot: 'hits' | 'misses' | 'selectedTokens' | 'attendedTokens' | 'heads', n: number) => {
      c[COUNTER[slot]]! += n;
      c[COUNTER[`last${slot[0]!.toUpperCase()}${slot.slice(1)}` as keyof typeof COUNTER]]! += n;
    };
    step.rows.forEach((row, b) => {
      if (row.input < 0) return;
      appendToken(this.device, step, row, t);
      const st = this.states[layer]![b]!;
      st.tail.count += 1; // the hook sees the new token
      try {
        const read = this.checkAttended(this.attendDecode!(layer, b, at(t.q), at(t.out)));
        add('attendedTokens', read.tokens);
        add('selectedTokens', read.selected ?? 0);
        add('hits', read.hits ?? 0);
        add('misses', read.misses ?? 0);
        add('heads', Hkv);
      } finally {
        st.tail.count -= 1;
      }
      this.device.convert(at(step.out.buf, step.out.offset + row.input * Hq * d), at(t.out), Hq * d);
    });
    this.device.write(at(step.counters), c);
    this.hostCounters[layer] = c;
  }

  /** What a policy's `attendDecode` returned, refused unless counts (`stats()` and snapshots keep them). */
  private checkAttended(read: Attended): Attended {
    const name = `the ${this.name} policy's attendDecode`;
    // NOTE: a promise never gets here: refusePromiseResults refuses it as the hook returns.
    if (read === null || typeof read !== 'object') {
      throw new ConfigError(`decode: ${name} must return { tokens, selected?, hits?, misses? } synchronously, got ${fmt(read)}`);
    }
    for (const k of ['tokens', 'selected', 'hits', 'misses'] as const) {
      const v = read[k];
      if ((v !== undefined || k === 'tokens') && !(Number.isSafeInteger(v) && v! >= 0)) throw new ConfigError(`decode: ${name} returned ${k} ${fmt(v)}; counts are non-negative integers`);
    }
    return read;
  }

  /** Writes input row i (S tokens, every kv head) after a sequence's tail, rotating keys; `tail.commit(S)` makes them count. */
  private writePrompt(st: S, keys: Input, values: Input, i: number, S: number): void {
    const { kvHeads: Hkv, headDim: d } = this.spec;
    const n = S * d;
    st.tail.reserve(S);
    const rows = this.inputRows(n, keys.dtype, [keys, values]);
    try {
      const kf = this.device.alloc(n, 'f32', 'prefill');
      try {
        const positions = range(st.length, S);
        for (let h = 0; h < Hkv; h++) {
          const from = (i * Hkv + h) * n;
          this.device.convert(at(kf), rows.view(keys, from), n);
          this.device.rope(at(kf), S, d, d, positions, this.invFreq, this.spec.rope.style, 1);
          st.tail.write(h, at(kf), rows.view(values, from), S);
        }
      } finally {
        this.device.free(kf);
      }
    } finally {
      rows.release();
    }
  }

  /** Causal attention of input row i's S queries over everything stored before and with them, into `out` (host or device). */
  private prefillAttention(layer: number, seq: number, queries: Input, i: number, S: number, out: TensorData | DeviceTensor): void {
    const { queryHeads: Hq, kvHeads: Hkv, headDim: d, scale } = this.spec;
    const g = this.group;
    const n = g * S * d; // one kv group's queries
    const first = this.states[layer]![seq]!.length; // position of the first new row (written, not yet committed)
    const positions = new Int32Array(g * S);
    for (let j = 0; j < g; j++) positions.set(range(first, S), j * S);
    const held: DeviceBuffer[] = [];
    const rows = this.inputRows(n, queries.dtype, [queries]);
    let stored: AttentionRows | undefined;
    try {
      const qf = this.device.alloc(n, 'f32', 'prefill');
      held.push(qf);
      const of = this.device.alloc(n, 'f32', 'prefill');
      held.push(of);
      // NOTE: made per call, as qf and of, not a kept scratch buffer: it is as large as the call.
      const half = !(out instanceof DeviceTensor) && queries.dtype !== 'f32' ? this.device.alloc(n, queries.dtype, 'prefill') : undefined;
      if (half) held.push(half);
      stored = this.attentionRows(layer, seq, S);
      for (let h = 0; h < Hkv; h++) {
        const from = (i * Hq + h * g) * S * d;
        this.device.convert(at(qf), rows.view(queries, from), n);
        this.device.rope(at(qf), g * S, d, d, positions, this.invFreq, this.spec.rope.style, 1);
        // NOTE: the new rows follow the stored ones, which may be fewer than the row's tokens (evictions).
        this.device.causalAttention(at(qf), g, S, d, scale, stored.count, stored.k(h), stored.v(h), at(of));
        this.observeQueries?.(layer, seq, h, at(qf), S, stored);
        if (out instanceof DeviceTensor) this.device.convert(shift(out.viewFor(this.device, 'prefill', 'out'), from), at(of), n);
        else out.set(this.download(of, n, half) as never, from);
      }
    } finally {
      stored?.release();
      rows.release();
      held.forEach((b) => this.device.free(b));
    }
  }

  /**
   * Views of input rows of `n` elements: a device tensor's own memory, or host rows staged through
   * one buffer (each staged view is valid until the next). `release` frees the staging buffer.
   */
  private inputRows(n: number, dtype: DType, inputs: readonly Input[]): { view(t: Input, from: number): View; release(): void } {
    const raw = inputs.some((t) => !onDevice(t)) ? this.device.alloc(n, dtype, 'prefill') : undefined;
    return {
      view: (t, from) => {
        if (onDevice(t)) return shift(t.viewFor(this.device, 'prefill', 'input'), from);
        this.device.write(at(raw!), t.data.subarray(from, from + n));
        return at(raw!);
      },
      release: () => raw && this.device.free(raw),
    };
  }

  /** Converts f32 device rows to a host array: f32, or the dtype of `tmp` (converted there first). */
  private download(src: DeviceBuffer, n: number, tmp: DeviceBuffer | undefined): TensorData {
    if (!tmp) return this.device.read(at(src) as View & { buf: { dtype: 'f32' } }, n);
    this.device.convert(at(tmp), at(src), n);
    return this.device.read(at(tmp) as View & { buf: { dtype: 'bf16' } }, n);
  }
}

/** What a call whose after-hook threw has done (`hooksAfter`). */
const COMMITTED = "the call went through (every row's tokens are stored; do not repeat it)";

/** The hooks a policy may override: each runs inside a synchronous call, which cannot wait for a promise. */
const HOOKS = [
  'memoryNeed', 'memoryKnobs', 'stepGeometry', 'planRow', 'beforeStep', 'afterStep', 'attendDecode', 'attentionRows', 'beforePrefill', 'observeQueries', 'afterPrefill',
  'tailStart', 'afterCrop', 'clearState', 'disposePolicy', 'saveState', 'loadState', 'policyOptions', 'saveCounters', 'loadCounters', 'savedStateKeys', 'checkSavedState',
  'restoreBytes', 'hostChunkBytes', 'summarizeChunks', 'scoringQueries',
];

/**
 * Refuses a policy whose hooks are `async`, before a runtime is started: the call would go on without
 * it (a saveState promise saved nothing, an afterPrefill rejection went unhandled, its later writes
 * landed amid another call).
 */
function refuseAsyncHooks(policy: string, cache: object): void {
  const hooks = cache as Record<string, unknown>;
  const async = HOOKS.filter((h) => typeof hooks[h] === 'function' && (hooks[h] as () => unknown).constructor.name === 'AsyncFunction');
  if (async.length) throw new ConfigError(`${policy}: ${async.join(', ')} ${async.length > 1 ? 'are async functions' : 'is an async function'}; a policy's hooks run inside synchronous cache calls, which cannot wait for them, so make ${async.length > 1 ? 'them' : 'it'} synchronous`);
}

/**
 * Wraps each hook the policy overrides so that a promise it returns (a plain function that returns
 * one, which refuseAsyncHooks cannot see) is a ConfigError naming the hook when the call returns,
 * not work that lands amid a later call or a rejection nobody handles.
 */
function refusePromiseResults(policy: string, cache: object): void {
  const hooks = cache as Record<string, unknown>;
  const base = BaseKVCache.prototype as unknown as Record<string, unknown>;
  for (const h of HOOKS) {
    const hook = hooks[h];
    if (typeof hook !== 'function' || hook === base[h]) continue;
    hooks[h] = function (this: unknown, ...args: unknown[]): unknown {
      const r: unknown = hook.apply(this, args);
      if (typeof r === 'object' && r !== null && typeof (r as { then?: unknown }).then === 'function') {
        (r as PromiseLike<unknown>).then(undefined, () => undefined); // its rejection is reported by this error
        throw new ConfigError(`${policy}: ${h} returned a promise; a policy's hooks run inside synchronous cache calls, which cannot wait for it, so do its work synchronously`);
      }
      return r;
    };
  }
}

/** A view moved by `elements`. */
export const shift = (v: View, elements: number): View => ({ buf: v.buf, offset: v.offset + elements });

/** Checks the shape and dtype of a device tensor to make; returns a copy of the shape. */
function checkNewTensor(call: string, shape: unknown, dtype: unknown): number[] {
  if (!Array.isArray(shape) || shape.length > 64) throw new ShapeError(`${call}: shape must be a non-empty array of positive integers, got ${fmt(shape)}`);
  // NOTE: one copy, checked and used: holes read as undefined, and a getter is read once.
  const dims: unknown[] = Array.from(shape as unknown[]);
  if (dims.length === 0 || !dims.every((s) => Number.isSafeInteger(s) && (s as number) > 0)) {
    throw new ShapeError(`${call}: shape must be a non-empty array of positive integers, got ${fmt(dims)}`);
  }
  if (dtype !== 'f32' && dtype !== 'f16' && dtype !== 'bf16') throw new DTypeError(`${call}: dtype is ${fmt(dtype)}, expected 'f32', 'f16' or 'bf16'`);
  if (numel(dims as number[]) * 4 > 2 ** 50) throw new OutOfMemoryError(`${call}: [${dims.join(', ')}] is ${numel(dims as number[])} elements, more than any device holds`);
  return dims as number[];
}
