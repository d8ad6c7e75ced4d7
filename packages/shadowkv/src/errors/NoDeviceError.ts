import { ShadowKVError } from './ShadowKVError.js';

/** The CUDA addon loaded but found no usable device (CUDA errors 35, 100, 209). */
export class NoDeviceError extends ShadowKVError {
  /** @internal */
  constructor(message: string) {
    super('SKV_NO_DEVICE', message);
  }
}
