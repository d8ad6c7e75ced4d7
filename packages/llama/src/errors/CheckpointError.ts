import { ShadowKVError } from '../../../shadowkv/src/errors/ShadowKVError.js';

/**
 * What is wrong with a checkpoint:
 * - `'io'`: a file cannot be read
 * - `'config'`: `config.json` is not JSON, lacks a field, or asks for something this loop does not run
 * - `'header'`: a safetensors header (or the shard index) is malformed
 * - `'truncated'`: a file ends before the bytes its header promises
 * - `'dtype'`: a tensor's dtype is not f32, f16 or bf16
 * - `'missing-tensor'`: a weight the config implies is in no file
 * - `'shape'`: a weight's shape disagrees with the config
 */
export type CheckpointProblem = 'io' | 'config' | 'header' | 'truncated' | 'dtype' | 'missing-tensor' | 'shape';

/** A checkpoint that cannot be loaded as it is; `problem` says which kind, the message names the file and tensor. */
export class CheckpointError extends ShadowKVError {
  readonly problem: CheckpointProblem;

  /** @internal */
  constructor(problem: CheckpointProblem, message: string) {
    super('SKV_CHECKPOINT', message);
    this.problem = problem;
  }
}
