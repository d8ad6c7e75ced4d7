// Types of everything shadowkv_cuda.node exports (runtime/cuda/addon.cc). Addresses are device
// pointers as numbers (exact below 2^53); element counts and strides are in elements; dtypes are
// DTYPE_CODE values. Every op throws a JS Error naming the op, with `cudaCode`, when CUDA fails.

// NOTE: dtype, RoPE style and status codes are the SDK's (backends/codes.ts); they must match
// SkvDtype and SkvRopeStyle in kernels/launchers.h and SkvStatus in runtime/cuda/status.h.
export { DTYPE_CODE, ROPE_STYLE_CODE, STATUS } from '../../shadowkv/src/backends/codes.js';
/** CUDA errors that mean "no usable CUDA here". NOTE: must match SkvNoDevice in runtime/cuda/status.h. */
export const CUDA_NO_DEVICE = { insufficientDriver: 35, noDevice: 100, noKernelImage: 209 } as const;
/** cudaErrorMemoryAllocation: becomes an OutOfMemoryError. */
export const CUDA_OUT_OF_MEMORY = 2;
/**
 * CUDA errors that are sticky (a fault inside a kernel, an uncorrectable ECC error): every later call
 * of the process fails too. ECC uncorrectable 214, illegal address 700, launch timeout 702, device-side
 * assert 710, hardware stack 714, illegal instruction 715, misaligned address 716, invalid address space
 * 717, invalid PC 718, launch failure 719.
 */
export const CUDA_STICKY = new Set([214, 700, 702, 710, 714, 715, 716, 717, 718, 719]);
/** Bytes of an `SkvStep` and of one `SkvStepRow` (kernels/launchers.h), the record of `decodeLayer`. */
export const STEP_BYTES = 112;
export const ROW_BYTES = 184;
/** Bytes of one `SkvSegment` (k, v addresses as u64, n, ld as i32): six 32-bit words. */
export const SEGMENT_WORDS = 6;

type Ptr = number;

/** What the addon attaches to the errors it throws. */
export interface AddonError extends Error {
  cudaCode?: number;
  op?: string;
}

/** `memoryStats()`: bytes and blocks the addon holds for this process. */
export interface AddonMemoryStats {
  deviceBlocks: number;
  deviceBytes: number;
  /** Pinned, mapped host-tier blocks. */
  hostBlocks: number;
  hostBytes: number;
  /** Device workspaces of the ops, grown on demand and kept for the process. */
  workspaceBytes: number;
  /** Pinned host memory kept for the process: the staging ring of uploads and lowRankKeys' pinned workspace. */
  stagingBytes: number;
  /** Writes (past 8 MiB) and reads (past 1 MiB) so far that went as one synchronous copy, waiting for the GPU. */
  syncCopies: number;
}

/** `cudaMemoryType` values `pointerInfo` reports. */
export const CUDA_MEMORY_TYPE = { unregistered: 0, host: 1, device: 2, managed: 3 } as const;

/** `deviceInfo(ordinal)`. */
export interface CudaDeviceInfo {
  name: string;
  major: number;
  minor: number;
  multiprocessors: number;
  totalBytes: number;
  /** e.g. 13000 for CUDA 13.0. */
  driverVersion: number;
  runtimeVersion: number;
}

/** The module `shadowkv_cuda.node`. */
export interface CudaAddon {
  readonly napiVersion: number;
  // ---- devices (memory.cc) ----
  /** Devices visible; throws with `cudaCode` 35 (no driver), 100 (no device), ... when CUDA cannot start. */
  deviceCount(): number;
  deviceInfo(ordinal: number): CudaDeviceInfo;
  setDevice(ordinal: number): void;
  /** Runs one tiny kernel on the device: throws 209 when the binary has no code for it. */
  selfTest(ordinal: number): void;
  /** cudaMemGetInfo, after the blocks the memory pool keeps are given back (trimPool). */
  memInfo(): { free: number; total: number };
  /** Gives the device-tier blocks freed into the current device's memory pool back to the device (waits for every op first). */
  trimPool(): void;
  synchronize(): void;
  /** Device-tier blocks (cudaMallocFromPoolAsync), cudaMalloc and cudaHostAlloc calls so far, workspace growth included. */
  allocCount(): number;
  /** What the process holds through the addon, counted natively: live malloc/hostAlloc blocks, and the per-process workspaces and staging ring. */
  memoryStats(): AddonMemoryStats;
  /**
   * cudaPointerGetAttributes: `type` 0 unregistered host memory, 1 registered host, 2 device, 3 managed; `device` its ordinal (-1: none);
   * for device or managed memory of the current device, the allocation that holds it (cuMemGetAddressRange: `base` and `size` in bytes; -1 where the driver cannot say).
   */
  pointerInfo(ptr: Ptr): { type: number; device: number; base: number; size: number };
  /** Records a timing event on the stream; returns its id. */
  eventRecord(): number;
  /** Waits for event `b`; milliseconds of GPU time between `a` and `b`. */
  eventElapsed(a: number, b: number): number;
  eventRelease(id: number): void;
  // ---- buffers (memory.cc) ----
  /** A zeroed device block of `bytes`. */
  malloc(bytes: number): Ptr;
  free(ptr: Ptr): void;
  /** A zeroed pinned, mapped host block; returns its device address (what kernels and copies use). */
  hostAlloc(bytes: number): Ptr;
  freeHost(ptr: Ptr): void;
  /** The array's bytes to `ptr` (either tier). */
  write(ptr: Ptr, data: ArrayBufferView): void;
  /** Fills `into` from `ptr`; waits for every op issued before. */
  read(ptr: Ptr, into: ArrayBufferView): void;
  /** Fills `into` from the 'host'-tier block (or the output block) that holds ptr once every op before has run: a wait and a memcpy, no copy on the GPU. */
  readHost(ptr: Ptr, into: ArrayBufferView): void;
  /** The device address of the process's pinned, mapped output block, grown to hold `bytes` (the old one freed): decode steps' outputs bound for host arrays. */
  outputBlock(bytes: number): Ptr;
  /** memmove of `bytes` between buffers of either tier. */
  copy(dst: Ptr, src: Ptr, bytes: number): void;
  /** Copies [dst, src, bytes] triples on a second stream, after every op issued before; none may overlap its source. */
  copyAside(table: Float64Array): void;
  /** Every op issued after this waits for the copyAside copies issued before it. */
  joinAside(): void;
  // ---- ops (runtime/cuda/<op>.cc), arguments as in runtime/wasm/abi.h ----
  convert(src: Ptr, srcDtype: number, dst: Ptr, dstDtype: number, n: number): void;
  convertRows(src: Ptr, srcDtype: number, srcLd: number, dst: Ptr, dstDtype: number, dstLd: number, rows: number, cols: number): void;
  gemm(
    M: number, N: number, K: number, alpha: number,
    A: Ptr, aDtype: number, lda: number, transA: number, aRows: Ptr,
    B: Ptr, bDtype: number, ldb: number, transB: number,
    beta: number, C: Ptr, ldc: number,
  ): void;
  preRopeKeys(src: Ptr, dtype: number, headStride: number, heads: number, rows: number, d: number, dst: Ptr, ld: number, invFreq: Ptr, style: number, first: number): void;
  rope(x: Ptr, rows: number, d: number, ldx: number, positions: Ptr, invFreq: Ptr, style: number, direction: number): void;
  /** Returns a STATUS code. */
  lowRankKeys(K: Ptr, S: number, D: number, rank: number, oversample: number, powerIters: number, seed: number, U: Ptr, SV: Ptr, proj: Ptr, sigma: Ptr): number;
  /** lowRankKeys on a host thread and a stream of its own, after every op issued before; one at a time. */
  lowRankKeysAside(K: Ptr, S: number, D: number, rank: number, oversample: number, powerIters: number, seed: number, U: Ptr, SV: Ptr, proj: Ptr, sigma: Ptr): void;
  /** Waits for lowRankKeysAside; every op issued after this waits for it. Returns its STATUS code. */
  joinLowRankKeysAside(): number;
  landmarks(keys: Ptr, dtype: number, ldk: number, nChunks: number, C: number, d: number, landmarks: Ptr, minCos: Ptr): void;
  keepLandmarks(landmarks: Ptr, heads: number, nChunks: number, d: number, outliers: Ptr, counts: Ptr, maxOutliers: number, out: Ptr, dtype: number, ids: Ptr, capacity: number): void;
  landmarkBounds(landmarks: Ptr, dtype: number, heads: number, capacity: number, d: number, headCounts: Ptr): void;
  /** Writes min(k, n) indices ascending into `out`; returns that count. */
  selectChunks(scores: Ptr, n: number, k: number, largest: number, rows: number, out: Int32Array): number;
  /** `work` holds g * (n + 64) f32: the logits, then per-block maxima. */
  scoreChunks(q: Ptr, g: number, d: number, scale: number, landmarks: Ptr, dtype: number, n: number, scores: Ptr, work: Ptr): void;
  rebuildKeys(
    U: Ptr, uDtype: number, rank: number, SVh: Ptr, svDtype: number, ldsv: number, d: number,
    chunkIds: Ptr, slots: Ptr, nChunks: number, C: number, invFreq: Ptr, style: number,
    out: Ptr, outDtype: number, ldo: number,
  ): void;
  /**
   * `pages`: a device table of u64 page addresses; `fp8Rows`: 0, or C where the pages hold fp8 chunks of C rows;
   * `bases`: 0, or the device bytes of a packed tier's bases (runtime/wasm/pack.h).
   */
  gatherValues(pages: Ptr, pageChunks: number, heads: number, h: number, ids: Ptr, slots: Ptr, n: number, block: number, dtype: number, fp8Rows: number, bases: Ptr, dst: Ptr): void;
  /** `chunks` chunks of n bf16 values into packed chunks at `dst` (n-value slots), their bases to the bytes at `bases` (runtime/wasm/pack.h). */
  packValues(src: Ptr, chunks: number, n: number, dst: Ptr, bases: Ptr): void;
  /** `chunks` chunks of C rows of d values (dtype) into fp8 chunks at `dst` (runtime/wasm/fp8.h). */
  quantizeValues(src: Ptr, dtype: number, chunks: number, C: number, d: number, dst: Ptr): void;
  /** `segments`: a device table of SEGMENT_WORDS-word entries; `total` = the sum of their n; `tasks` >= 1: the step's attentions (attention.h). */
  sparseAttention(q: Ptr, g: number, d: number, scale: number, segments: Ptr, nseg: number, total: number, kvDtype: number, tasks: number, out: Ptr): void;
  /**
   * One decode step of one layer (kernels/decode_layer.cu): an SkvStep then its SkvStepRows, and
   * optionally the step's q, k and v as host arrays of the io dtype (the record's q, k, v are then
   * ignored), uploaded with the rows, and `ticket`: stageStepInputs' answer for them (their copies
   * are then in the upload already, unless anything was staged or uploaded since). Returns a STATUS code.
   */
  decodeLayer(record: Uint8Array, q?: Float32Array | Uint16Array, k?: Float32Array | Uint16Array, v?: Float32Array | Uint16Array, ticket?: number): number;
  /**
   * A decode step's host-array inputs checked and copied into the pinned block the next decodeLayer
   * uploads, in one pass (runtime/cuda/decode_layer.cc): `limits` holds q's, k's and v's bound (as
   * checkFiniteHost's), or null for no check. A ticket (> 0) for decodeLayer, or -1 - i where
   * element i of q | k | v (flat, in that order) is the first that fails (nothing staged then).
   */
  stageStepInputs(q: Float32Array | Uint16Array, k: Float32Array | Uint16Array, v: Float32Array | Uint16Array, dtype: number, limits: Float64Array | null): number;
  /**
   * GPU milliseconds per stage of the decode steps queued since the last call (waits for them) and
   * their count, how every step since the last call was launched and the latest sparse step's plan;
   * then records the stages of later steps while `on` (benchmarks only: it costs time).
   */
  stepProfile(on: boolean): {
    stages: Record<'append' | 'logits' | 'select' | 'fetch' | 'attention' | 'compact', number>;
    steps: number;
    /** How the steps since the last call were launched: replayed from a CUDA graph, captured into one, or kernel by kernel; attention blocks that found their task's landed count short (none, unless a bug). */
    launches: { replayed: number; captured: number; oneByOne: number; landedFallbacks: number; graphsBroken: boolean };
    /**
     * Host microseconds per decodeLayer call since the last call, by part (runtime/cuda/decode_layer.cc): the record's checks, the
     * pinned copy of rows and inputs, the upload's API calls, the launch; the calls, and those whose inputs stageStepInputs had copied (`staged`).
     */
    host: Record<'check' | 'stage' | 'upload' | 'launch' | 'calls' | 'staged', number>;
    /** The latest sparse step's plan (kernels/launchers.h SkvStepLaunches); zeros before any. */
    plan: Record<'logitSplit' | 'selectBlocks' | 'rowGroups' | 'splitFetch' | 'valueGrid' | 'near' | 'fold' | 'landed', number>;
  };
  /**
   * Whether a model of these heads runs on the current device (kernels/launchers.h SpecFits): null,
   * or the first launch whose shared memory (`need` bytes a block) passes the device's `limit`.
   */
  specFits(qHeads: number, kvHeads: number, d: number): { kernel: string; need: number; limit: number } | null;
  /**
   * Value checks of device ranges (kernels/check_finite.cu): `table` holds [ptr, dtype, n, limit]
   * per check, `first` a device block of one u64 per check. One copy back (waits for the GPU);
   * per check the flat index of the first NaN, infinite or out-of-range element, or -1.
   */
  checkFinite(table: Float64Array, first: Ptr): number[];
  /**
   * The same check of a host array (Float32Array for f32, Uint16Array for f16/bf16) on the CPU, in
   * native code: the index of the first NaN, infinite or out-of-range element, or -1. Needs no GPU.
   */
  checkFiniteHost(data: Float32Array | Uint16Array, dtype: number, limit: number): number;
  causalAttention(q: Ptr, g: number, Sq: number, d: number, scale: number, offset: number, k: Ptr, v: Ptr, kvDtype: number, out: Ptr): void;
}
