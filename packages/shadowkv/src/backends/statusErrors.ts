// The typed errors of the runtimes' status returns (skv_status: runtime/wasm/abi.h and
// runtime/cuda/status.h), in one place for both devices, so that no status reaches the user as a
// bare RangeError.
import { NonFiniteError } from '../errors/NonFiniteError.js';
import { OutOfMemoryError } from '../errors/OutOfMemoryError.js';
import { ShapeError } from '../errors/ShapeError.js';
import { STATUS } from './codes.js';

/** lowRankKeys' sizes, as the runtimes take them. */
export interface LowRankSizes {
  S: number;
  D: number;
  rank: number;
  oversample: number;
  powerIters: number;
}

/** The sizes the factorization takes; NOTE: must match low_rank_args_ok in runtime/wasm/subspace.h. */
function lowRankSizesOk({ S, D, rank, oversample, powerIters }: LowRankSizes): boolean {
  return S > 0 && D > 0 && rank > 0 && rank <= S && rank <= D && oversample >= 0 && powerIters >= 0;
}

/**
 * Throws the typed error of lowRankKeys' status, nothing for ok: `alloc` an OutOfMemoryError
 * (`memory` says which memory could not hold the workspace); `arg` with sizes the runtime takes is a
 * NaN or infinite key (a NonFiniteError: the only other reason the runtimes refuse); else a ShapeError.
 */
export function throwLowRankStatus(status: number, sizes: LowRankSizes, memory: string): void {
  if (status === STATUS.ok) return;
  const { S, D, rank, oversample, powerIters } = sizes;
  const what = `S=${S}, D=${D}, rank=${rank}, oversample=${oversample}, powerIters=${powerIters}`;
  if (status === STATUS.alloc) throw new OutOfMemoryError(`lowRankKeys: ${memory} could not hold the workspace for ${what} (about 4·D² bytes)`);
  if (status === STATUS.arg && lowRankSizesOk(sizes)) {
    throw new NonFiniteError(`lowRankKeys: the ${S} keys to compress hold a NaN or infinite value (status ${status}); nothing was compressed. Inputs sent with checkValues: false are not checked: leave it on, or find the layer that made the NaN`);
  }
  throw new ShapeError(`lowRankKeys: the runtime rejected ${what} (status ${status}); it takes 0 < rank <= min(S, D), oversample >= 0 and powerIters >= 0`);
}

/**
 * Throws the typed error of decode_layer's status, nothing for ok: `alloc` an OutOfMemoryError with
 * `oom` as its message; any other a ShapeError (a step record the runtime refused: nothing was changed).
 */
export function throwStepStatus(status: number, oom: string): void {
  if (status === STATUS.ok) return;
  if (status === STATUS.alloc) throw new OutOfMemoryError(`decode_layer: ${oom}`);
  throw new ShapeError(`decode_layer: the runtime rejected the step record (status ${status}): its sizes, dtypes or row handles are out of range, a bug in shadowkv; nothing was changed`);
}
