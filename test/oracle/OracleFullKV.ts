// Exact dense attention with the same calls as OracleShadowKV: what ShadowKV approximates.
import { OracleGeometry } from './geometry.js';
import { causalAttention, sparseAttention } from './ops.js';
import { fromHeadRows, toHeadRows } from './tensors.js';
import type { OracleSpec } from './types.js';

interface DenseSequence {
  keys: Float64Array[][]; // [Hkv][t] -> [d], post-RoPE
  values: Float64Array[][]; // [Hkv][t] -> [d]
}

const emptyDense = (kvHeads: number): DenseSequence => ({
  keys: Array.from({ length: kvHeads }, () => []),
  values: Array.from({ length: kvHeads }, () => []),
});

/** Float64 full KV cache of one layer for `batch` sequences: every token attends to every earlier token exactly. */
export class OracleFullKV {
  private readonly geo: OracleGeometry;
  private readonly seqs: DenseSequence[];

  constructor(spec: OracleSpec, batch: number) {
    this.geo = new OracleGeometry(spec);
    this.seqs = Array.from({ length: batch }, () => emptyDense(spec.kvHeads));
  }

  prefill(seq: number, keys: Float64Array, values: Float64Array, S: number, queries?: Float64Array): Float64Array | undefined {
    const { Hq, Hkv, d, group, scale } = this.geo;
    const state = this.sequence(seq);
    this.geo.checkPrefill(keys, values, S, queries);
    const start = this.length(seq);
    const post = this.geo.ropeHeads(keys, Hkv, S, start);
    const vals = toHeadRows(values, Hkv, S, d);
    for (let h = 0; h < Hkv; h++) {
      for (const r of post[h]) state.keys[h].push(r);
      for (const r of vals[h]) state.values[h].push(r);
    }
    if (!queries) return undefined;
    const q = this.geo.ropeHeads(queries, Hq, S, start);
    const kv = (j: number): number => Math.floor(j / group);
    return fromHeadRows(q.map((rows, j) => causalAttention(rows, state.keys[kv(j)], state.values[kv(j)], scale, start)), d);
  }

  decode(query: Float64Array, key: Float64Array, value: Float64Array): Float64Array {
    const { Hq, Hkv, d, group, scale } = this.geo;
    const B = this.seqs.length;
    this.geo.checkDecode(query, key, value, B);
    const out = new Float64Array(B * Hq * d);
    this.seqs.forEach((state, b) => {
      const p = this.length(b);
      for (let h = 0; h < Hkv; h++) {
        state.keys[h].push(this.geo.ropeDecode(key, b, Hkv, h, p));
        state.values[h].push(value.slice((b * Hkv + h) * d, (b * Hkv + h + 1) * d));
      }
      for (let j = 0; j < Hq; j++) {
        const h = Math.floor(j / group);
        out.set(sparseAttention(this.geo.ropeDecode(query, b, Hq, j, p), state.keys[h], state.values[h], scale), (b * Hq + j) * d);
      }
    });
    return out;
  }

  reset(seq: number): void {
    this.sequence(seq);
    this.seqs[seq] = emptyDense(this.geo.Hkv);
  }

  length(seq: number): number {
    return this.sequence(seq).keys[0].length;
  }

  private sequence(seq: number): DenseSequence {
    const state = this.seqs[seq];
    if (!Number.isInteger(seq) || !state) throw new Error(`oracle: sequence ${seq} is not in [0, ${this.seqs.length})`);
    return state;
  }
}
