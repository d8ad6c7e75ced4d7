// Typed view of the wasm runtime's C ABI (runtime/wasm/abi.h). NOTE: enums must match abi.h.

export { DTYPE_CODE, ROPE_STYLE_CODE, STATUS } from '../codes.js';

/** Bytes of one `skv_segment` in wasm32: k, v, n, ld as four i32. */
export const SEGMENT_BYTES = 16;
/** 4-byte words of `skv_layer_step` and of one `skv_row` in wasm32. */
export const STEP_WORDS = 20;
export const ROW_WORDS = 28;

type Ptr = number;

/**
 * The runtime's heap: what a `WebAssembly.Memory` is, typed here so these declarations need no lib
 * with WebAssembly in it (lib `dom`; `@types/node` 20 has none).
 */
export interface WasmMemory {
  /** The heap's bytes; a new buffer after the heap grows, so re-read it after any call that may allocate. */
  readonly buffer: ArrayBuffer;
  /** Grows the heap by `delta` 64 KiB pages; returns its size in pages before. */
  grow(delta: number): number;
}

/** The exports of `shadowkv*.wasm`; pointers are byte offsets into `memory` (read them with `>>> 0`). */
export interface WasmExports {
  memory: WasmMemory;
  _initialize?: () => void;
  skv_malloc(bytes: number): Ptr;
  skv_free(p: Ptr): void;
  skv_alloc_count(): number;
  /**
   * Marks the scratch arena empty after a trap, which skipped the destructors of live scratch;
   * returns `STATUS.alloc` when the trap was an allocation the heap could not give, else `STATUS.ok`.
   */
  skv_scratch_reset(): number;
  /** Emscripten's shadow-stack pointer (a trap leaves it where the trap happened); absent from builds without it. */
  stackSave?: () => number;
  stackRestore?: (sp: number) => void;
  skv_convert(src: Ptr, srcDtype: number, dst: Ptr, dstDtype: number, n: number): void;
  skv_convert_rows(src: Ptr, srcDtype: number, srcLd: number, dst: Ptr, dstDtype: number, dstLd: number, rows: number, cols: number): void;
  skv_gemm(
    M: number, N: number, K: number, alpha: number,
    A: Ptr, aDtype: number, lda: number, transA: number, aRows: Ptr,
    B: Ptr, bDtype: number, ldb: number, transB: number,
    beta: number, C: Ptr, ldc: number,
  ): void;
  skv_rope(x: Ptr, rows: number, d: number, ldx: number, positions: Ptr, invFreq: Ptr, style: number, direction: number): void;
  skv_low_rank_keys(
    K: Ptr, S: number, D: number, rank: number, oversample: number, powerIters: number, seed: number,
    U: Ptr, SV: Ptr, proj: Ptr, sigma: Ptr,
  ): number;
  skv_landmarks(keys: Ptr, dtype: number, ldk: number, nChunks: number, C: number, d: number, landmarks: Ptr, minCos: Ptr): void;
  skv_pre_rope_keys(src: Ptr, dtype: number, headStride: number, heads: number, rows: number, d: number, dst: Ptr, ld: number, invFreq: Ptr, style: number, first: number): void;
  skv_keep_landmarks(landmarks: Ptr, heads: number, nChunks: number, d: number, outliers: Ptr, counts: Ptr, maxOutliers: number, out: Ptr, dtype: number, ids: Ptr, capacity: number): void;
  skv_select_chunks(scores: Ptr, n: number, k: number, largest: number, out: Ptr): number;
  skv_score_chunks(q: Ptr, g: number, d: number, scale: number, landmarks: Ptr, dtype: number, n: number, scores: Ptr, work: Ptr): void;
  skv_rebuild_keys(
    U: Ptr, uDtype: number, rank: number, SVh: Ptr, svDtype: number, ldsv: number, d: number,
    chunkIds: Ptr, outSlots: Ptr, nChunks: number, C: number, invFreq: Ptr, style: number,
    out: Ptr, outDtype: number, ldo: number,
  ): void;
  skv_sparse_attention(q: Ptr, g: number, d: number, scale: number, segs: Ptr, nseg: number, kvDtype: number, out: Ptr): void;
  skv_gather_values(pages: Ptr, pageChunks: number, heads: number, h: number, ids: Ptr, slots: Ptr, n: number, block: number, dtype: number, fp8Rows: number, bases: Ptr, dst: Ptr): void;
  skv_quantize_values(src: Ptr, dtype: number, chunks: number, C: number, d: number, dst: Ptr): void;
  skv_pack_values(src: Ptr, chunks: number, n: number, dst: Ptr, bases: Ptr): void;
  skv_decode_layer(step: Ptr): number;
  skv_causal_attention(
    q: Ptr, g: number, Sq: number, d: number, scale: number, offset: number,
    k: Ptr, v: Ptr, kvDtype: number, out: Ptr,
  ): void;
}
