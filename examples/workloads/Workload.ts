// What the demo's host loop needs from a source of attention inputs: a synthetic generator today,
// a real model's projections later.
import type { ModelSpec, Tensor } from '../../packages/shadowkv/src/index.js';

export interface Workload {
  readonly spec: ModelSpec;
  /** One-line description for the report. */
  readonly description: string;
  /** Prompt tokens per sequence. */
  readonly tokens: number;
  /** Pre-RoPE prompt keys and values of one layer, `[batch, Hkv, S, d]`. */
  prompt(layer: number, batch: number): { keys: Tensor; values: Tensor };
  /** One decode token of one layer for every row: pre-RoPE query, key, value. */
  step(layer: number, batch: number): { query: Tensor; key: Tensor; value: Tensor };
  /** The chunk the queries look for, if the workload planted one. */
  needleChunk?(chunkSize: number): number;
}
