// The stateful float64 reference ShadowKV cache for one layer (docs/algorithm.md, followed step by step).
import { compressIfDue } from './compression.js';
import { causalAttention, scoreChunks, selectChunks, sparseAttention } from './ops.js';
import { OracleGeometry } from './geometry.js';
import { emptySequence, type SequenceState } from './sequenceState.js';
import { fromHeadRows, positionRange, toHeadRows } from './tensors.js';
import type { OracleShadowKVOptions, OracleSpec } from './types.js';

/**
 * Float64 ShadowKV of one layer for `batch` sequences: exact SVD basis, exact values, the selection,
 * reuse and compaction rules of docs/algorithm.md. Slow and obviously correct; tests compare runtimes to it.
 */
export class OracleShadowKV {
  private readonly geo: OracleGeometry;
  private readonly options: OracleShadowKVOptions;
  private readonly seqs: SequenceState[];
  private reuse = { hits: 0, misses: 0 };
  private scores = new Map<string, Map<number, number>>();

  /**
   * @param storedValue how a value row of a stored chunk comes back from the host tier: itself (the
   * storage dtype's rounding is the comparison's tolerance), or as fp8 (`fp8Row` after the storage
   * dtype's rounding, for `fp8Values`). Outlier chunks and the tail are exact on the device.
   */
  constructor(spec: OracleSpec, options: OracleShadowKVOptions, batch: number, private readonly storedValue?: (row: Float64Array) => Float64Array) {
    for (const [key, value] of Object.entries(options)) {
      if (!(Number.isInteger(value) && value >= 0)) throw new Error(`OracleShadowKV: options.${key} must be a non-negative integer, got ${value}`);
    }
    if (options.chunkSize < 1 || options.rank < 1) throw new Error('OracleShadowKV: chunkSize and rank must be >= 1');
    this.geo = new OracleGeometry(spec);
    this.options = { ...options };
    this.seqs = Array.from({ length: batch }, () => emptySequence(spec.kvHeads));
  }

  prefill(seq: number, keys: Float64Array, values: Float64Array, S: number, queries?: Float64Array): Float64Array | undefined {
    const { Hq, Hkv, d, group, scale } = this.geo;
    const state = this.sequence(seq);
    this.geo.checkPrefill(keys, values, S, queries);
    const start = state.length;
    // 1. New tokens join the exact tail (pre-RoPE kept for compression, post-RoPE for attention).
    const pre = toHeadRows(keys, Hkv, S, d);
    const post = this.geo.ropeHeads(keys, Hkv, S, start);
    const vals = toHeadRows(values, Hkv, S, d);
    for (let h = 0; h < Hkv; h++) {
      // Loops, not push(...rows): a long prompt would overflow the argument list.
      for (const r of pre[h]) state.keysPre[h].push(r);
      for (const r of post[h]) state.keysPost[h].push(r);
      for (const r of vals[h]) state.values[h].push(r);
    }
    state.length += S;
    // 2. Causal attention over the store as stored (rebuilt landmark chunks) and the exact tail.
    let out: Float64Array | undefined;
    if (queries) {
      const q = this.geo.ropeHeads(queries, Hq, S, start);
      const storedKeys = Array.from({ length: Hkv }, (_, h) => this.keysAsStored(state, h));
      const storedValues = Array.from({ length: Hkv }, (_, h) => this.valuesAsStored(state, h));
      out = fromHeadRows(
        q.map((rows, j) => causalAttention(rows, storedKeys[Math.floor(j / group)], storedValues[Math.floor(j / group)], scale, start)),
        d,
      );
    }
    // 3. Compaction of a compressed row, after the output was computed; a dense row is compressed
    // at its next decode step (the whole prompt, however many prefill calls brought it).
    if (state.basis) compressIfDue(state, this.options, this.geo);
    return out;
  }

  decode(query: Float64Array, key: Float64Array, value: Float64Array): Float64Array {
    const { Hq, d } = this.geo;
    const B = this.seqs.length;
    this.geo.checkDecode(query, key, value, B);
    const out = new Float64Array(B * Hq * d);
    this.reuse = { hits: 0, misses: 0 };
    this.seqs.forEach((state, b) => {
      if (!state.basis) compressIfDue(state, this.options, this.geo); // first compression, before the step
      this.decodeSequence(state, b, query, key, value).forEach((o, j) => out.set(o, (b * Hq + j) * d));
      if (state.basis) compressIfDue(state, this.options, this.geo); // compaction, after it
    });
    return out;
  }

  lastSelection(seq: number, kvHead: number): number[] {
    return [...this.sequence(seq).selection[kvHead]];
  }

  /** Scores of every landmark chunk at the last decode step of (seq, kvHead), by chunk id (for near-tie checks). */
  lastScores(seq: number, kvHead: number): Map<number, number> {
    return this.scores.get(`${seq}:${kvHead}`) ?? new Map();
  }

  lastStepReuse(): { hits: number; misses: number } {
    return { ...this.reuse };
  }

  state(seq: number): { length: number; compressed: number; outliers: number[][]; landmarkChunks: number[][] } {
    const s = this.sequence(seq);
    return { length: s.length, compressed: s.compressed, outliers: s.outliers.map((o) => [...o]), landmarkChunks: s.landmarkChunks.map((l) => [...l]) };
  }

  reset(seq: number): void {
    this.sequence(seq);
    this.seqs[seq] = emptySequence(this.geo.Hkv);
  }

  length(seq: number): number {
    return this.sequence(seq).length;
  }

  /** One token for sequence b: steps 1-5 of docs/algorithm.md "Decode step"; returns [Hq] output rows. */
  private decodeSequence(state: SequenceState, b: number, query: Float64Array, key: Float64Array, value: Float64Array): Float64Array[] {
    const { Hq, Hkv, d, group, scale } = this.geo;
    const p = state.length;
    // 1. RoPE q and k at p; append k, v to the tail.
    const q = Array.from({ length: Hq }, (_, j) => this.geo.ropeDecode(query, b, Hq, j, p));
    for (let h = 0; h < Hkv; h++) {
      state.keysPre[h].push(key.slice((b * Hkv + h) * d, (b * Hkv + h + 1) * d));
      state.keysPost[h].push(this.geo.ropeDecode(key, b, Hkv, h, p));
      state.values[h].push(value.slice((b * Hkv + h) * d, (b * Hkv + h + 1) * d));
    }
    state.length += 1;
    const out: Float64Array[] = [];
    for (let h = 0; h < Hkv; h++) {
      const groupQueries = q.slice(h * group, (h + 1) * group);
      // 2-3. Score the landmark set, select the top budget / C chunks (none while dense).
      const selected = state.basis ? this.select(state, h, groupQueries, `${b}:${h}`) : [];
      // 4. Reuse: a chunk selected at the previous step is a hit; outputs do not depend on it.
      const hits = selected.filter((c) => state.selection[h].includes(c)).length;
      this.reuse.hits += hits;
      this.reuse.misses += selected.length - hits;
      state.selection[h] = selected;
      // 5. Attend over outliers ∪ selected ∪ exact tail.
      const { keys, values } = this.attentionSet(state, h, selected);
      for (const qj of groupQueries) out.push(sparseAttention(qj, keys, values, scale));
    }
    return out;
  }

  private select(state: SequenceState, h: number, groupQueries: Float64Array[], key: string): number[] {
    const C = this.options.chunkSize;
    const scores = scoreChunks(groupQueries, state.landmarks[h], this.geo.scale);
    this.scores.set(key, new Map(scores.map((s, i) => [state.landmarkChunks[h][i], s])));
    const k = Math.min(Math.floor(this.options.budget / C), scores.length);
    // NOTE: the landmark set is ascending by chunk id, so "lower index" ties are "lower chunk id" ties.
    return selectChunks(scores, k).map((i) => state.landmarkChunks[h][i]);
  }

  /** Keys (outliers exact, selected rebuilt, tail exact) and values (selected as stored) that a decode step of head h attends to. */
  private attentionSet(state: SequenceState, h: number, selected: number[]): { keys: Float64Array[]; values: Float64Array[] } {
    const C = this.options.chunkSize;
    const chunkTokens = (chunks: number[]): number[] => chunks.flatMap((c) => positionRange(c * C, C));
    const exact = [...chunkTokens(state.outliers[h]), ...positionRange(state.compressed, state.length - state.compressed)];
    const rebuilt = chunkTokens(selected);
    const keys = [...exact.map((t) => state.keysPost[h][t]), ...this.rebuild(state, h, rebuilt)];
    const stored = (t: number) => (this.storedValue ? this.storedValue(state.values[h][t]) : state.values[h][t]);
    const values = [...exact.map((t) => state.values[h][t]), ...rebuilt.map(stored)];
    return { keys, values };
  }

  /** Every key of head h as the store holds it: rebuilt low-rank for landmark chunks, exact otherwise. */
  private keysAsStored(state: SequenceState, h: number): Float64Array[] {
    const C = this.options.chunkSize;
    const rebuiltChunks = new Set(state.landmarkChunks[h]);
    return state.keysPost[h].map((exact, t) =>
      t < state.compressed && rebuiltChunks.has(Math.floor(t / C)) ? state.rebuiltKeys[h][t] : exact,
    );
  }

  /** Every value of head h as the store holds it: as the host tier returns it for landmark chunks, exact otherwise. */
  private valuesAsStored(state: SequenceState, h: number): Float64Array[] {
    const C = this.options.chunkSize;
    if (!this.storedValue) return state.values[h];
    const stored = new Set(state.landmarkChunks[h]);
    return state.values[h].map((v, t) => (t < state.compressed && stored.has(Math.floor(t / C)) ? this.storedValue!(v) : v));
  }

  /** Rebuilt low-rank keys `RoPE_t(U[t] · SV_h)` of compressed tokens (see SequenceState.rebuiltKeys). */
  private rebuild(state: SequenceState, h: number, positions: number[]): Float64Array[] {
    return positions.map((t) => state.rebuiltKeys[h][t]);
  }

  private sequence(seq: number): SequenceState {
    const state = this.seqs[seq];
    if (!Number.isInteger(seq) || !state) throw new Error(`oracle: sequence ${seq} is not in [0, ${this.seqs.length})`);
    return state;
  }
}
