// A float64 Llama forward pass written straight from the math (HF modeling_llama), independent of
// packages/llama: its own RoPE frequencies (Llama-3 scaling included), rotation, causal GQA
// attention, RMSNorm and SwiGLU. The loop under test must match it.
import { toFloat32, type Tensor } from '../../packages/shadowkv/src/backend.js';
import type { LlamaConfig } from '../../packages/llama/src/index.js';

type Mat = { data: Float64Array; rows: number; cols: number };

const mat = (t: Tensor): Mat => ({ data: Float64Array.from(toFloat32(t)), rows: t.shape[0]!, cols: t.shape[1] ?? 1 });

/** y[T, out] = x[T, in] · Wᵀ (+ b). */
function linear(x: Float64Array, T: number, w: Mat, b?: Mat): Float64Array {
  const y = new Float64Array(T * w.rows);
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < w.rows; n++) {
      let s = b ? b.data[n]! : 0;
      for (let k = 0; k < w.cols; k++) s += x[t * w.cols + k]! * w.data[n * w.cols + k]!;
      y[t * w.rows + n] = s;
    }
  }
  return y;
}

function rmsNorm(x: Float64Array, T: number, H: number, w: Mat, eps: number): Float64Array {
  const y = new Float64Array(T * H);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let i = 0; i < H; i++) ss += x[t * H + i]! ** 2;
    const inv = 1 / Math.sqrt(ss / H + eps);
    for (let i = 0; i < H; i++) y[t * H + i] = x[t * H + i]! * inv * w.data[i]!;
  }
  return y;
}

/** HF `_compute_default_rope_parameters`, then `_compute_llama3_parameters` where scaling is set. */
function invFreq(c: LlamaConfig): Float64Array {
  const d = c.headDim;
  const f = Float64Array.from({ length: d / 2 }, (_, i) => 1 / c.ropeTheta ** ((2 * i) / d));
  const s = c.ropeScaling;
  if (!s) return f;
  return f.map((x) => {
    const wavelen = (2 * Math.PI) / x;
    const low = s.originalMaxPositions / s.lowFreqFactor, high = s.originalMaxPositions / s.highFreqFactor;
    if (wavelen < high) return x;
    if (wavelen > low) return x / s.factor;
    const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * (x / s.factor) + smooth * x;
  });
}

/** In place: rotate_half RoPE on rows [T, heads * d], token t at position t. */
function rope(x: Float64Array, T: number, heads: number, d: number, freq: Float64Array): void {
  const h2 = d / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const o = (t * heads + h) * d;
      for (let i = 0; i < h2; i++) {
        const a = t * freq[i]!, cos = Math.cos(a), sin = Math.sin(a);
        const x1 = x[o + i]!, x2 = x[o + i + h2]!;
        x[o + i] = x1 * cos - x2 * sin;
        x[o + i + h2] = x2 * cos + x1 * sin;
      }
    }
  }
}

/** Logits `[T][vocab]` of every position of `tokens` (one pass, no cache). */
export function referenceLogits(c: LlamaConfig, tensors: ReadonlyMap<string, Tensor>, tokens: readonly number[]): Float64Array[] {
  const W = (name: string) => mat(tensors.get(name)!);
  const opt = (name: string) => (tensors.has(name) ? W(name) : undefined);
  const [T, H, d, Hq, Hkv] = [tokens.length, c.hiddenSize, c.headDim, c.queryHeads, c.kvHeads];
  const embed = W('model.embed_tokens.weight');
  const x = new Float64Array(T * H);
  tokens.forEach((id, t) => x.set(embed.data.subarray(id * H, (id + 1) * H), t * H));
  const freq = invFreq(c);
  for (let l = 0; l < c.layers; l++) {
    const p = (name: string) => `model.layers.${l}.${name}`;
    const h = rmsNorm(x, T, H, W(p('input_layernorm.weight')), c.rmsNormEps);
    const proj = (name: string, input: Float64Array) => linear(input, T, W(p(`${name}.weight`)), opt(p(`${name}.bias`)));
    const q = proj('self_attn.q_proj', h), k = proj('self_attn.k_proj', h), v = proj('self_attn.v_proj', h);
    rope(q, T, Hq, d, freq);
    rope(k, T, Hkv, d, freq);
    const attn = new Float64Array(T * Hq * d);
    for (let hq = 0; hq < Hq; hq++) {
      const hk = Math.floor(hq / (Hq / Hkv));
      for (let i = 0; i < T; i++) {
        const scores = Array.from({ length: i + 1 }, (_, j) => {
          let s = 0;
          for (let e = 0; e < d; e++) s += q[(i * Hq + hq) * d + e]! * k[(j * Hkv + hk) * d + e]!;
          return s / Math.sqrt(d);
        });
        const max = Math.max(...scores);
        const w = scores.map((s) => Math.exp(s - max));
        const sum = w.reduce((a, b) => a + b, 0);
        for (let j = 0; j <= i; j++) for (let e = 0; e < d; e++) attn[(i * Hq + hq) * d + e]! += (w[j]! / sum) * v[(j * Hkv + hk) * d + e]!;
      }
    }
    const o = proj('self_attn.o_proj', attn);
    for (let i = 0; i < T * H; i++) x[i]! += o[i]!;
    const h2 = rmsNorm(x, T, H, W(p('post_attention_layernorm.weight')), c.rmsNormEps);
    const gate = proj('mlp.gate_proj', h2), up = proj('mlp.up_proj', h2);
    const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]!);
    const down = linear(act, T, W(p('mlp.down_proj.weight')), opt(p('mlp.down_proj.bias')));
    for (let i = 0; i < T * H; i++) x[i]! += down[i]!;
  }
  const final = rmsNorm(x, T, H, W('model.norm.weight'), c.rmsNormEps);
  const head = c.tieWordEmbeddings ? embed : W('lm_head.weight');
  const logits = linear(final, T, head);
  return Array.from({ length: T }, (_, t) => logits.subarray(t * c.vocabSize, (t + 1) * c.vocabSize));
}

/** Largest difference relative to the largest magnitude of `want`. */
export const maxRelDiff = (got: ArrayLike<number>, want: ArrayLike<number>) => {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
    scale = Math.max(scale, Math.abs(want[i]!));
  }
  return diff / scale;
};

/** n token ids below `vocab`, a fixed pattern per seed. */
export const tokens = (n: number, vocab: number, seed: number) => Array.from({ length: n }, (_, i) => (i * 7 + seed * 13 + ((i * i) % 5)) % vocab);
