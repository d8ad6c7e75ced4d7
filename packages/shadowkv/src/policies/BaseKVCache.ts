import { at, type Device, type DeviceBuffer, type View } from '../backends/Device.js';
import type { ResolvedCacheOptions } from '../config.js';
import { DTYPE_BYTES, hostArray } from '../dtype.js';
import { CapacityError } from '../errors/CapacityError.js';
import { DisposedError } from '../errors/DisposedError.js';
import { ropeFrequencies, type ResolvedSpec } from '../spec.js';
import type { DType, Tensor, TensorData } from '../tensor.js';
import { ROPE_STYLE_CODE } from '../backends/wasm/abi.js';
import { encodeSnapshot } from '../snapshot.js';
import { ExactRegion } from './ExactRegion.js';
import type { DecodeInput, KVCachePolicy, MemoryReport, PolicyStats, PrefillInput } from './KVCachePolicy.js';
import { checkLayer, checkSameDtype, checkSequence, checkSequences, checkTensor } from './validate.js';

/** What every policy keeps per (layer, sequence): the token count and the exact tail. */
export interface SequenceState {
  length: number;
  tail: ExactRegion;
}

/** Per-head key and value rows (contiguous, stride headDim) that prefill attention reads. */
export interface AttentionRows {
  k(h: number): View;
  v(h: number): View;
  release(): void;
}

/**
 * Does once what every policy needs: input validation (nothing changes before every check
 * passed), RoPE at each token's position, the exact tail, dense attention, lifetimes, snapshots.
 * A policy overrides the hooks `attendDecode`, `attentionRows`, `afterAppend`, and the state hooks.
 */
export abstract class BaseKVCache<S extends SequenceState = SequenceState> implements KVCachePolicy {
  abstract readonly name: string;
  readonly batch: number;
  readonly dtype: DType;
  /** Query heads per kv head. */
  protected readonly group: number;
  protected readonly ropeStyle: number;
  protected readonly invFreq: DeviceBuffer; // [d/2] f64
  protected readonly states: S[][]; // [layer][sequence]
  private disposed = false;

  constructor(
    readonly spec: ResolvedSpec,
    protected readonly cacheOptions: ResolvedCacheOptions,
    protected readonly device: Device,
  ) {
    this.batch = cacheOptions.batch;
    this.dtype = cacheOptions.dtype;
    this.group = spec.queryHeads / spec.kvHeads;
    this.ropeStyle = ROPE_STYLE_CODE[spec.rope.style];
    this.invFreq = device.alloc(spec.headDim / 2, 'f64', 'rope');
    device.write(at(this.invFreq), ropeFrequencies(spec.headDim, spec.rope));
    this.states = Array.from({ length: spec.layers }, () =>
      Array.from({ length: this.batch }, () => ({ length: 0, tail: new ExactRegion(device, spec.kvHeads, spec.headDim, this.dtype, 'exactTail') }) as S),
    );
  }

  // ---- hooks ----

  /**
   * Decode steps after the append, for every row of a layer: q `[B, Hq, d]` f32 post-RoPE →
   * out `[B, Hq, d]` f32. The default runs `attendDecode` per row; a policy may take the whole
   * layer at once (one native call).
   */
  protected attendLayer(layer: number, q: DeviceBuffer, out: DeviceBuffer): void {
    const n = this.spec.queryHeads * this.spec.headDim;
    for (let b = 0; b < this.batch; b++) this.attendDecode(layer, b, at(q, b * n), at(out, b * n));
  }

  /** Decode attention of row `seq` (its token already appended): q `[Hq, d]` f32 post-RoPE → out `[Hq, d]` f32. */
  protected attendDecode(layer: number, seq: number, q: View, out: View): void {
    const { tail } = this.states[layer]![seq]!;
    const { headDim: d, scale } = this.spec;
    for (let h = 0; h < this.spec.kvHeads; h++) {
      const segment = { k: tail.headK(h), v: tail.headV(h), n: tail.count, ld: d };
      this.device.sparseAttention(shift(q, h * this.group * d), this.group, d, scale, [segment], shift(out, h * this.group * d));
    }
  }

  /** Every stored token's key and value rows, in position order, for prefill attention. */
  protected attentionRows(layer: number, seq: number): AttentionRows {
    const { tail } = this.states[layer]![seq]!;
    return { k: (h) => tail.headK(h), v: (h) => tail.headV(h), release: () => {} };
  }

  /** Runs after each prefill/decode call per sequence (compression policies compress here). */
  protected afterAppend(_layer: number, _seq: number): void {}

  /** Empties a sequence's state beyond the tail. */
  protected clearState(_state: S): void {}

  /** Extra per-sequence state for snapshots. */
  protected saveState(_state: S): Record<string, unknown> {
    return {};
  }

  protected loadState(_state: S, _saved: Record<string, unknown>): void {}

  /** Policy options, recorded in snapshots. */
  abstract policyOptions(): Record<string, unknown>;

  stats(): PolicyStats {
    return { steps: 0, lastHits: 0, lastMisses: 0, hitRate: 0, lastBytesFetched: 0, bytesFetched: 0, lastAttendedTokens: 0, lastSelectedTokens: 0, compressions: 0, compactions: 0 };
  }

  // ---- the contract ----

  prefill(layer: number, input: PrefillInput): Tensor | undefined {
    const call = `prefill(layer ${layer})`;
    this.guard(call);
    checkLayer(call, layer, this.spec.layers);
    const { kvHeads: Hkv, queryHeads: Hq, headDim: d } = this.spec;
    checkTensor(call, 'keys', input?.keys, [-1, Hkv, -1, d], `spec has ${Hkv} kv heads of dim ${d}`);
    const [rows, , S] = input.keys.shape as [number, number, number, number];
    checkTensor(call, 'values', input.values, [rows, Hkv, S, d], 'values must match keys');
    if (input.queries) checkTensor(call, 'queries', input.queries, [rows, Hq, S, d], `spec has ${Hq} query heads and keys hold ${S} tokens`);
    checkSameDtype(call, { keys: input.keys, values: input.values, queries: input.queries });
    const seqs = checkSequences(call, input.sequences, rows, this.batch);
    seqs.forEach((s) => this.checkCapacity(call, layer, s, S));

    const outDtype = input.keys.dtype;
    const out = input.queries ? hostArray(outDtype, rows * Hq * S * d) : undefined;
    seqs.forEach((s, i) => {
      const st = this.states[layer]![s]!;
      this.appendPrompt(st, input, i, S);
      if (input.queries && out) this.prefillAttention(layer, s, input.queries, i, S, out);
      this.afterAppend(layer, s);
    });
    return out ? { data: out, shape: [rows, Hq, S, d], dtype: outDtype } : undefined;
  }

  decode(layer: number, input: DecodeInput): Tensor {
    const call = `decode(layer ${layer})`;
    this.guard(call);
    checkLayer(call, layer, this.spec.layers);
    const { kvHeads: Hkv, queryHeads: Hq, headDim: d } = this.spec;
    const B = this.batch;
    checkTensor(call, 'query', input?.query, [B, Hq, 1, d], `the cache holds ${B} rows and spec has ${Hq} query heads of dim ${d}`);
    checkTensor(call, 'key', input.key, [B, Hkv, 1, d], `the cache holds ${B} rows and spec has ${Hkv} kv heads of dim ${d}`);
    checkTensor(call, 'value', input.value, [B, Hkv, 1, d], 'value must match key');
    checkSameDtype(call, { query: input.query, key: input.key, value: input.value });
    for (let b = 0; b < B; b++) this.checkCapacity(call, layer, b, 1);

    // 1. RoPE q and k at each row's position; append k and v to the exact tail.
    const rowsOf = this.states[layer]!;
    const q = this.uploadRotated('decode.q', input.query.data, input.query.dtype, (r) => rowsOf[Math.floor(r / Hq)]!.length);
    const k = this.uploadRotated('decode.k', input.key.data, input.key.dtype, (r) => rowsOf[Math.floor(r / Hkv)]!.length);
    const v = this.device.scratch('decode.v', B * Hkv * d, input.value.dtype);
    this.device.write(at(v), input.value.data);
    rowsOf.forEach((st, b) => {
      st.tail.reserve(1);
      for (let h = 0; h < Hkv; h++) st.tail.write(h, at(k, (b * Hkv + h) * d), at(v, (b * Hkv + h) * d), 1);
      st.tail.commit(1);
      st.length += 1;
    });

    // 2-5. Score, select, fetch, attend: the policy's part.
    const out = this.device.scratch('decode.out', B * Hq * d, 'f32');
    this.attendLayer(layer, q, out);
    const data = this.download(out, B * Hq * d, input.query.dtype);
    for (let b = 0; b < B; b++) this.afterAppend(layer, b);
    return { data, shape: [B, Hq, 1, d], dtype: input.query.dtype };
  }

  length(sequence?: number): number {
    this.guard('length()');
    if (sequence === undefined) return Math.max(...this.states[0]!.map((st) => st.length));
    checkSequence('length()', sequence, this.batch);
    return this.states[0]![sequence]!.length;
  }

  reset(sequence?: number): void {
    this.guard('reset()');
    if (sequence !== undefined) checkSequence('reset()', sequence, this.batch);
    for (const row of this.states) {
      row.forEach((st, s) => {
        if (sequence !== undefined && s !== sequence) return;
        this.clearState(st);
        st.tail.count = 0;
        st.length = 0;
      });
    }
  }

  memory(): MemoryReport {
    this.guard('memory()');
    const tokens = this.states.flat().reduce((n, st) => n + st.length, 0);
    const dense = tokens * 2 * this.spec.kvHeads * this.spec.headDim * DTYPE_BYTES[this.dtype];
    return { ...this.device.memory(), dense };
  }

  /** Snapshot content (the envelope and checksum are added by `save`). */
  snapshot(): Record<string, unknown> {
    this.guard('save()');
    return {
      policy: this.name,
      spec: this.spec,
      cache: this.cacheOptions,
      options: this.policyOptions(),
      counters: this.saveCounters(),
      layers: this.states.map((row) => row.map((st) => ({ length: st.length, tail: { count: st.tail.count, ...st.tail.snapshot() }, ...this.saveState(st) }))),
    };
  }

  /** Refills a fresh cache from `snapshot()` content (already checked for shape by the loader). */
  restore(layers: { length: number; tail: { count: number; k: TensorData; v: TensorData } }[][], counters: Record<string, number>): void {
    layers.forEach((row, l) =>
      row.forEach((saved, s) => {
        const st = this.states[l]![s]!;
        st.length = saved.length;
        st.tail.restore(saved.tail.count, saved.tail.k, saved.tail.v);
        this.loadState(st, saved as unknown as Record<string, unknown>);
      }),
    );
    this.loadCounters(counters);
  }

  /** Policy counters behind `stats()`, for snapshots. */
  protected saveCounters(): Record<string, number> {
    return {};
  }

  protected loadCounters(_counters: Record<string, number>): void {}

  save(): Uint8Array {
    return encodeSnapshot(this.snapshot());
  }

  dispose(): void {
    if (this.disposed) return;
    for (const st of this.states.flat()) {
      this.clearState(st);
      st.tail.free();
    }
    this.device.free(this.invFreq);
    this.device.dispose();
    this.disposed = true;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  // ---- shared steps ----

  protected guard(call: string): void {
    if (this.disposed) throw new DisposedError(`${call}: this ${this.name} cache was disposed`);
  }

  private checkCapacity(call: string, layer: number, seq: number, tokens: number): void {
    const length = this.states[layer]![seq]!.length;
    if (length + tokens > this.cacheOptions.maxTokens) {
      throw new CapacityError(`${call}: sequence ${seq} holds ${length} tokens; ${tokens} more would pass maxTokens (${this.cacheOptions.maxTokens}); raise maxTokens or reset the row`);
    }
  }

  /** Uploads `[rows*heads, d]` host rows to f32 scratch and rotates row r at `position(r)`. */
  private uploadRotated(name: string, data: TensorData, dtype: DType, position: (r: number) => number): DeviceBuffer {
    const d = this.spec.headDim;
    const rows = data.length / d;
    const raw = this.device.scratch(`${name}.raw`, data.length, dtype);
    const f32 = this.device.scratch(name, data.length, 'f32');
    this.device.write(at(raw), data);
    this.device.convert(at(f32), at(raw), data.length);
    const positions = Int32Array.from({ length: rows }, (_, r) => position(r));
    this.device.rope(at(f32), rows, d, d, positions, this.invFreq, this.ropeStyle, 1);
    return f32;
  }

  /** Converts f32 device rows to a host array of `dtype`. */
  protected download(src: DeviceBuffer, n: number, dtype: DType): TensorData {
    if (dtype === 'f32') return this.device.read(at(src) as View & { buf: { dtype: 'f32' } }, n);
    const tmp = this.device.scratch(`download.${dtype}`, n, dtype);
    this.device.convert(at(tmp), at(src), n);
    return this.device.read(at(tmp) as View & { buf: { dtype: 'bf16' } }, n);
  }

  /** Appends input row i (S tokens, every kv head) to a sequence's tail, rotating keys. */
  private appendPrompt(st: S, input: PrefillInput, i: number, S: number): void {
    const { kvHeads: Hkv, headDim: d } = this.spec;
    const n = S * d;
    const raw = this.device.alloc(n, input.keys.dtype, 'prefill');
    const kf = this.device.alloc(n, 'f32', 'prefill');
    const positions = Int32Array.from({ length: S }, (_, t) => st.length + t);
    try {
      st.tail.reserve(S);
      for (let h = 0; h < Hkv; h++) {
        const from = (i * Hkv + h) * n;
        this.device.write(at(raw), input.keys.data.subarray(from, from + n));
        this.device.convert(at(kf), at(raw), n);
        this.device.rope(at(kf), S, d, d, positions, this.invFreq, this.ropeStyle, 1);
        this.device.write(at(raw), input.values.data.subarray(from, from + n));
        st.tail.write(h, at(kf), at(raw), S);
      }
      st.tail.commit(S);
      st.length += S;
    } finally {
      this.device.free(raw);
      this.device.free(kf);
    }
  }

  /** Causal attention of input row i's S queries over everything stored before and with them. */
  private prefillAttention(layer: number, seq: number, queries: Tensor, i: number, S: number, out: TensorData): void {
    const { queryHeads: Hq, kvHeads: Hkv, headDim: d, scale } = this.spec;
    const g = this.group;
    const n = g * S * d; // one kv group's queries
    const length = this.states[layer]![seq]!.length;
    const raw = this.device.alloc(n, queries.dtype, 'prefill');
    const qf = this.device.alloc(n, 'f32', 'prefill');
    const of = this.device.alloc(n, 'f32', 'prefill');
    const rows = this.attentionRows(layer, seq);
    const positions = Int32Array.from({ length: g * S }, (_, r) => length - S + (r % S));
    try {
      for (let h = 0; h < Hkv; h++) {
        const from = (i * Hq + h * g) * S * d;
        this.device.write(at(raw), queries.data.subarray(from, from + n));
        this.device.convert(at(qf), at(raw), n);
        this.device.rope(at(qf), g * S, d, d, positions, this.invFreq, this.ropeStyle, 1);
        this.device.causalAttention(at(qf), g, S, d, scale, length - S, rows.k(h), rows.v(h), at(of));
        out.set(this.download(of, n, queries.dtype) as never, from);
      }
    } finally {
      rows.release();
      [raw, qf, of].forEach((b) => this.device.free(b));
    }
  }
}

/** A view moved by `elements`. */
export const shift = (v: View, elements: number): View => ({ buf: v.buf, offset: v.offset + elements });
