// Codes shared with TypeScript. NOTE: must match STATUS and CUDA_NO_DEVICE in
// packages/shadowkv-cuda/src/AddonTypes.ts (and skv_status in runtime/wasm/abi.h).
#pragma once

// Return codes of the ops that can fail without a CUDA error (lowRankKeys).
enum SkvStatus { SKV_OK = 0, SKV_ERR_ALLOC = 1, SKV_ERR_ARG = 2 };

// CUDA runtime errors that mean "no usable CUDA here" rather than a bug: no driver or one too old
// (35), no device (100), no kernel image for this GPU (209). The probe turns them into NoDeviceError.
enum SkvNoDevice {
  SKV_CUDA_INSUFFICIENT_DRIVER = 35,
  SKV_CUDA_NO_DEVICE = 100,
  SKV_CUDA_NO_KERNEL_IMAGE = 209,
};
