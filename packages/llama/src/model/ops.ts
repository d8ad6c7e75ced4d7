// The element-wise steps of a Llama layer, on f32 rows. Names follow the math (llama2.c's run.c).
import { bf16ToF32, f16ToF32 } from '../../../shadowkv/src/dtype.js';
import type { Tensor } from '../../../shadowkv/src/tensor.js';

/** out[t, :] = embed[tokens[t], :] as f32. */
export function embedRows(embed: Tensor, tokens: ArrayLike<number>, out: Float32Array): void {
  const H = embed.shape[1]!;
  const widen = embed.dtype === 'bf16' ? bf16ToF32 : f16ToF32;
  for (let t = 0; t < tokens.length; t++) {
    const src = tokens[t]! * H;
    if (embed.dtype === 'f32') out.set(embed.data.subarray(src, src + H), t * H);
    else for (let i = 0; i < H; i++) out[t * H + i] = widen(embed.data[src + i]!);
  }
}

/** out = x / rms(x) * w per row of H (RMSNorm, eps inside the root as in HF `LlamaRMSNorm`). */
export function rmsNorm(x: Float32Array, rows: number, H: number, w: Float32Array, eps: number, out: Float32Array): void {
  for (let r = 0; r < rows; r++) {
    const o = r * H;
    let ss = 0;
    for (let i = 0; i < H; i++) ss += x[o + i]! * x[o + i]!;
    const inv = 1 / Math.sqrt(ss / H + eps);
    for (let i = 0; i < H; i++) out[o + i] = x[o + i]! * inv * w[i]!;
  }
}

/** y[r, :] += bias per row of N. */
export function addBias(y: Float32Array, rows: number, bias: Float32Array): void {
  const N = bias.length;
  for (let r = 0; r < rows; r++) for (let i = 0; i < N; i++) y[r * N + i]! += bias[i]!;
}

/** x[0:n] += y[0:n] (the residual stream). */
export function addInto(x: Float32Array, y: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) x[i]! += y[i]!;
}

/** gate[0:n] = silu(gate) * up: SwiGLU's gating, in place. */
export function swiglu(gate: Float32Array, up: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i]!;
    gate[i] = (g / (1 + Math.exp(-g))) * up[i]!;
  }
}

/** Token-major `[T, heads * d]` (a projection's output) to head-major `[heads, T, d]` (the cache's layout). */
export function toHeads(x: Float32Array, T: number, heads: number, d: number, out: Float32Array): void {
  for (let t = 0; t < T; t++) for (let h = 0; h < heads; h++) out.set(x.subarray((t * heads + h) * d, (t * heads + h + 1) * d), (h * T + t) * d);
}

/** Head-major `[heads, T, d]` back to token-major `[T, heads * d]`. */
export function fromHeads(x: Float32Array, T: number, heads: number, d: number, out: Float32Array): void {
  for (let h = 0; h < heads; h++) for (let t = 0; t < T; t++) out.set(x.subarray((h * T + t) * d, (h * T + t + 1) * d), (t * heads + h) * d);
}
