import type { ErrorCode } from './codes.js';

/** Base class of every error shadowkv throws. Catch by class, or switch on `code`. */
export class ShadowKVError extends Error {
  readonly code: ErrorCode;

  /** @internal */
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.code = code;
    this.name = new.target.name;
  }
}
