import type { LayerStepCounts, ShadowKVLayerStep } from '../policies/shadowkv/decodeLayer.js';
import type { DType, TensorData } from '../tensor.js';

/** Element types of device buffers: the storage dtypes plus index and float64 tables. */
export type BufferDType = DType | 'i32' | 'f64';

/** Host array type of each buffer dtype. */
export type HostArray<T extends BufferDType = BufferDType> = T extends 'f32'
  ? Float32Array
  : T extends 'i32'
    ? Int32Array
    : T extends 'f64'
      ? Float64Array
      : Uint16Array;

/** Bytes per element of each buffer dtype. */
export const BUFFER_BYTES: Record<BufferDType, number> = { f32: 4, f16: 2, bf16: 2, i32: 4, f64: 8 };

/** Memory the device (accelerator, or the wasm heap standing in for it) holds for a cache. */
export interface DeviceBuffer {
  readonly ptr: number;
  readonly length: number;
  readonly dtype: BufferDType;
  /** The memory-report component this buffer counts under. */
  readonly tag: string;
}

/** Memory in the host tier (pinned on CUDA, plain JS memory next to wasm). */
export interface HostBuffer {
  readonly data: TensorData;
  readonly length: number;
  readonly dtype: DType;
  readonly tag: string;
}

/** A position in a device buffer, counted in elements. */
export interface View {
  readonly buf: DeviceBuffer;
  readonly offset: number;
}

/** A view at an element offset. */
export const at = (buf: DeviceBuffer, offset = 0): View => ({ buf, offset });

/** One run of keys and values for attention: `n` rows of `d`, row stride `ld`. */
export interface Segment {
  readonly k: View;
  readonly v: View;
  readonly n: number;
  readonly ld: number;
}

/** Bytes a device holds, per tier and per component tag. */
export interface DeviceMemory {
  device: number;
  host: number;
  /** Size of the wasm heap (address space reserved, including free blocks); absent on native devices. */
  wasmHeap?: number;
  components: Record<string, number>;
}

/**
 * The fine-grained ops of one runtime instance, over its own buffers. Policies compose them;
 * a native backend may also offer a fused step (see `Backend.fused`). Ops are synchronous;
 * `read` is the only call that returns device data to the host.
 */
export interface Device {
  readonly backend: string;
  alloc<T extends BufferDType>(length: number, dtype: T, tag: string): DeviceBuffer;
  free(buf: DeviceBuffer): void;
  /** A buffer kept between calls for per-step temporaries; grows, never shrinks. */
  scratch(name: string, length: number, dtype: BufferDType): DeviceBuffer;
  write(dst: View, data: HostArray): void;
  read<T extends BufferDType>(src: View & { buf: { dtype: T } }, length: number): HostArray<T>;
  /** Same-dtype copy within or between buffers (overlap allowed). */
  copy(dst: View, src: View, length: number): void;
  /** Dtype conversion between buffers (round to nearest even). */
  convert(dst: View, src: View, length: number): void;
  /** Strided conversion: `rows` rows of `cols` elements, row strides `dstLd` and `srcLd`. */
  convertRows(dst: View, dstLd: number, src: View, srcLd: number, rows: number, cols: number): void;

  allocHost(length: number, dtype: DType, tag: string): HostBuffer;
  freeHost(buf: HostBuffer): void;
  /** Device → host copy of `length` elements. */
  offload(host: HostBuffer, hostOffset: number, src: View, length: number): void;
  /** Host → device gather: block i (`blockLength` elements at host offset `blocks[i] * blockLength`) to `dst + slots[i] * blockLength`. */
  fetchBlocks(dst: View, host: HostBuffer, blocks: Int32Array, slots: Int32Array, blockLength: number): void;

  gemm(a: GemmArgs): void;
  rope(x: View, rows: number, d: number, ld: number, positions: Int32Array, invFreq: DeviceBuffer, style: number, direction: 1 | -1): void;
  lowRankKeys(k: View, S: number, D: number, rank: number, oversample: number, powerIters: number, seed: number, out: LowRankOut): void;
  landmarks(keys: View, ld: number, nChunks: number, C: number, d: number, landmarks: View, minCos: View): void;
  selectChunks(scores: View, n: number, k: number, largest: boolean): Int32Array;
  scoreChunks(q: View, g: number, d: number, scale: number, landmarks: View, n: number, scores: View): void;
  rebuildKeys(a: RebuildArgs): void;
  sparseAttention(q: View, g: number, d: number, scale: number, segments: readonly Segment[], out: View): void;
  causalAttention(q: View, g: number, Sq: number, d: number, scale: number, offset: number, k: View, v: View, out: View): void;

  /**
   * Optional fused path: ShadowKV decode steps 2-5 (score, select, reuse, fetch, rebuild, attend)
   * for every row and kv head of one layer in a single call. Without it, the policy composes the
   * ops above (`decodeLayerComposed`, the reference any fused version must match).
   */
  decodeShadowKVLayer?(step: ShadowKVLayerStep): LayerStepCounts;

  memory(): DeviceMemory;
  dispose(): void;
}

/** `c = alpha * op(a) * op(b) + beta * c`; `aRows` gathers rows of a (when not transposed). */
export interface GemmArgs {
  M: number;
  N: number;
  K: number;
  alpha?: number;
  a: View;
  lda: number;
  transA?: boolean;
  aRows?: View;
  b: View;
  ldb: number;
  transB?: boolean;
  beta?: number;
  c: View;
  ldc: number;
}

/** Outputs of `lowRankKeys` (all f32): U [S x rank], SV [rank x D], proj [D x rank], sigma [rank]. */
export interface LowRankOut {
  u: View;
  sv: View;
  proj: View;
  sigma: View;
}

/** Arguments of `rebuildKeys`: rows `slot*C + t` of `out` = RoPE(U[chunk*C + t] · SVh). */
export interface RebuildArgs {
  u: View;
  rank: number;
  /** SV at the head's first column; row stride `ldsv`. */
  sv: View;
  ldsv: number;
  d: number;
  chunkIds: Int32Array;
  slots: Int32Array;
  C: number;
  invFreq: DeviceBuffer;
  style: number;
  out: View;
  ldo: number;
}
