// Geometry shared by the two oracle caches: head counts, GQA group, attention scale and RoPE, defaults resolved.
import { ropeFrequencies, ropeVector } from './rope.js';
import { checkSize, toHeadRows } from './tensors.js';
import type { OracleSpec, RopeStyle } from './types.js';

/** One layer's geometry as both oracle caches use it. */
export class OracleGeometry {
  readonly Hq: number;
  readonly Hkv: number;
  readonly d: number;
  readonly group: number; // g = Hq / Hkv
  readonly scale: number;
  readonly style: RopeStyle;
  readonly invFreq: Float64Array;

  constructor(spec: OracleSpec) {
    if (spec.queryHeads % spec.kvHeads !== 0 || spec.headDim % 2 !== 0) {
      throw new Error(`oracle: queryHeads ${spec.queryHeads} must be a multiple of kvHeads ${spec.kvHeads}, headDim ${spec.headDim} even`);
    }
    this.Hq = spec.queryHeads;
    this.Hkv = spec.kvHeads;
    this.d = spec.headDim;
    this.group = spec.queryHeads / spec.kvHeads;
    this.scale = spec.scale ?? 1 / Math.sqrt(spec.headDim);
    this.style = spec.rope.style ?? 'half';
    this.invFreq = ropeFrequencies(spec.headDim, spec.rope);
  }

  /** Checks the sizes of a prefill's keys, values and (optional) queries for S tokens. */
  checkPrefill(keys: Float64Array, values: Float64Array, S: number, queries?: Float64Array): void {
    checkSize('prefill', 'keys', keys, [this.Hkv, S, this.d]);
    checkSize('prefill', 'values', values, [this.Hkv, S, this.d]);
    if (queries) checkSize('prefill', 'queries', queries, [this.Hq, S, this.d]);
  }

  /** Checks the sizes of a decode's query, key and value for B rows. */
  checkDecode(query: Float64Array, key: Float64Array, value: Float64Array, B: number): void {
    checkSize('decode', 'query', query, [B, this.Hq, this.d]);
    checkSize('decode', 'key', key, [B, this.Hkv, this.d]);
    checkSize('decode', 'value', value, [B, this.Hkv, this.d]);
  }

  /** Post-RoPE rows[h][s] of a pre-RoPE [heads, S, d] tensor whose tokens sit at [offset, offset + S). */
  ropeHeads(x: Float64Array, heads: number, S: number, offset: number): Float64Array[][] {
    return toHeadRows(x, heads, S, this.d).map((rows) => rows.map((r, s) => ropeVector(r, offset + s, this.invFreq, this.style)));
  }

  /** Post-RoPE vector of head h of batch row b of a [B, heads, d] decode tensor, at `position`. */
  ropeDecode(x: Float64Array, b: number, heads: number, h: number, position: number): Float64Array {
    const start = (b * heads + h) * this.d;
    return ropeVector(x.slice(start, start + this.d), position, this.invFreq, this.style);
  }
}

