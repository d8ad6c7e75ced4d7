// The inputs of a scenario, generated once from its seed, so that several caches (and the oracle)
// can be fed exactly the same tensors in the same order.
import type { DType, Tensor } from '../../packages/shadowkv/src/backend.js';
import { KeyModel, makeTensor, randn, rng } from '../helpers/data.js';
import type { Scenario } from './scenarios.js';

/** A tensor and the exact float64 values it holds. */
export interface Input {
  t: Tensor;
  f64: Float64Array;
}

export type ScenarioStep =
  | { kind: 'reset'; sequence: number }
  | { kind: 'prefill'; layer: number; sequences: number[]; tokens: number; keys: Input; values: Input; queries?: Input }
  | { kind: 'decode'; layer: number; step: number; query: Input; key: Input; value: Input };

/** Every call of the scenario, in order (prefill and decode go layer by layer). */
export function* scenarioSteps(sc: Scenario, dtype: DType): Generator<ScenarioStep> {
  const { spec, batch } = sc;
  const { queryHeads: Hq, kvHeads: Hkv, headDim: d, layers } = spec;
  const rand = rng(sc.name.length * 7919);
  const keyModels = Array.from({ length: layers }, () => new KeyModel(Hkv, d, sc.keyRank, rand, 0));
  // Queries drift slowly around a per-(layer, row) direction, as consecutive real queries do.
  const qBase = Array.from({ length: layers }, () => Array.from({ length: batch }, () => randn(Hq * d, rand, 1)));
  let step = 0;
  for (const ev of sc.script) {
    if ('reset' in ev) {
      yield { kind: 'reset', sequence: ev.reset };
    } else if ('prefill' in ev) {
      const R = ev.prefill.length;
      const S = ev.tokens;
      for (let l = 0; l < layers; l++) {
        const keys = makeTensor(concat(ev.prefill.map(() => keyModels[l]!.sample(S))), [R, Hkv, S, d], dtype);
        const values = makeTensor(randn(R * Hkv * S * d, rand), [R, Hkv, S, d], dtype);
        const queries = ev.queries ? makeTensor(randn(R * Hq * S * d, rand), [R, Hq, S, d], dtype) : undefined;
        yield { kind: 'prefill', layer: l, sequences: ev.prefill, tokens: S, keys, values, queries };
      }
    } else {
      for (let t = 0; t < ev.decode; t++, step++) {
        for (let l = 0; l < layers; l++) {
          const qv = concat(qBase[l]!.map((base) => base.map((x) => x + randn(1, rand, 0.3)[0]!)));
          const query = makeTensor(qv, [batch, Hq, 1, d], dtype);
          const key = makeTensor(concat(Array.from({ length: batch }, () => keyModels[l]!.sample(1))), [batch, Hkv, 1, d], dtype);
          const value = makeTensor(randn(batch * Hkv * d, rand), [batch, Hkv, 1, d], dtype);
          yield { kind: 'decode', layer: l, step, query, key, value };
        }
      }
    }
  }
}

export function concat(parts: Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
