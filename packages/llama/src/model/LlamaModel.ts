import type { Backend } from '../../../shadowkv/src/backends/Backend.js';
import { resolveBackend } from '../../../shadowkv/src/backends/registry.js';
import { checkKeys } from '../../../shadowkv/src/config.js';
import { ConfigError } from '../../../shadowkv/src/errors/ConfigError.js';
import { DisposedError } from '../../../shadowkv/src/errors/DisposedError.js';
import { NonFiniteError } from '../../../shadowkv/src/errors/NonFiniteError.js';
import { ReentrancyError } from '../../../shadowkv/src/errors/ReentrancyError.js';
import { ShapeError } from '../../../shadowkv/src/errors/ShapeError.js';
import type { KVCachePolicy } from '../../../shadowkv/src/policies/KVCachePolicy.js';
import { fmt } from '../../../shadowkv/src/policies/validate.js';
import { resolveSpec, type ModelSpec, type ResolvedSpec } from '../../../shadowkv/src/spec.js';
import type { Tensor } from '../../../shadowkv/src/tensor.js';
import type { LlamaConfig } from '../checkpoint/LlamaConfig.js';
import type { Linear } from '../checkpoint/LlamaWeights.js';
import { loadCheckpoint, type Checkpoint } from '../checkpoint/loadCheckpoint.js';
import type { Projection } from '../checkpoint/weightLayout.js';
import { TokenizerError } from '../errors/TokenizerError.js';
import { checkCacheSpec, checkPositions, checkSequenceOption, rollingBack, rowWrites } from './cacheCall.js';
import { DeviceMatmul } from './DeviceMatmul.js';
import { JsMatmul } from './JsMatmul.js';
import { checkThreads, type Matmul, type MatmulWeight } from './Matmul.js';
import { addBias, addInto, embedRows, fromHeads, rmsNorm, swiglu, toHeads } from './ops.js';
import { WasmMatmul } from './WasmMatmul.js';

/** How a `LlamaModel` multiplies. */
export interface LlamaModelOptions {
  /**
   * The projections' matrix product:
   * - `'wasm'`: the wasm runtime's SIMD kernels (`skv_linear`), weights kept in their dtype; on
   *   `threads` threads where there are several (`ThreadedMatmul`, Node), else on this one (`WasmMatmul`)
   * - `'device'`: `gemm` on a device of `backend` (`DeviceMatmul`): the GPU on `cuda`
   * - `'js'`: plain JS f32, the reference
   * - a `Matmul` of your own: it stays yours. `dispose` of the model leaves it working, and the weights
   *   the model prepared in it stay there until you dispose it (a `Matmul` cannot free one weight)
   *
   * Default: `'device'` when `backend` resolves to anything but wasm (the cuda backend), else `'wasm'`
   * (on wasm, `skv_linear` is faster than the device's gemm).
   */
  matmul?: 'wasm' | 'device' | 'js' | Matmul;
  /**
   * Threads for `'wasm'`: prompt-sized products split by weight rows over this many (the bits do not
   * change; the weights then take about twice their size). Default: every core under Node
   * (`os.availableParallelism()`), 1 elsewhere (a browser's main thread may not block on workers).
   */
  threads?: number;
  /**
   * The backend whose device `'device'` runs on, as caches name it: `'auto'` (default: the best that
   * starts, cuda before wasm), `'cuda'`, `'wasm'`. Caches pick theirs apart: pass them the same name.
   */
  backend?: string;
}

/** Options of one `forward` call. */
export interface ForwardOptions {
  /** Cache row the tokens belong to. Default `0`. */
  sequence?: number;
  /** Logits of every token (`[T, vocab]`) instead of the last one's (`[vocab]`). Default `false`. */
  allLogits?: boolean;
}

/** Options of `prefill`. */
export interface PrefillOptions extends Omit<ForwardOptions, 'allLogits'> {
  /** Tokens per forward pass (each layer's `cache.prefill` gets this many at a time). Default `512`. */
  chunkTokens?: number;
  /** Called after each chunk. */
  onProgress?: (done: number, total: number) => void;
  /** Checked before the first chunk and after each one: once aborted, the row is rolled back and `signal.reason` thrown. */
  signal?: AbortSignal;
}

const FORWARD_KEYS = ['sequence', 'allLogits'];
const PREFILL_KEYS = ['sequence', 'chunkTokens', 'onProgress', 'signal'];

interface PreparedLinear {
  weight: MatmulWeight;
  bias?: Float32Array;
}

interface PreparedLayer {
  inputNorm: Float32Array;
  postNorm: Float32Array;
  proj: Record<Projection, PreparedLinear>;
}

/** Activations of up to `rows` tokens; reused while calls fit, so a decode step allocates none. */
class Scratch {
  readonly x; readonly h; readonly q; readonly k; readonly v; readonly qh; readonly kh; readonly vh; readonly attn; readonly gate; readonly up; readonly y;
  constructor(readonly rows: number, c: LlamaConfig) {
    const f = (width: number) => new Float32Array(rows * width);
    const [H, Q, KV, I] = [c.hiddenSize, c.queryHeads * c.headDim, c.kvHeads * c.headDim, c.intermediateSize];
    this.x = f(H); this.h = f(H); this.y = f(H); // residual stream, its norm, a block's output
    this.q = f(Q); this.k = f(KV); this.v = f(KV); // projections, token-major
    this.qh = f(Q); this.kh = f(KV); this.vh = f(KV); // the same, head-major for the cache
    this.attn = f(Q); this.gate = f(I); this.up = f(I);
  }
}

/**
 * A Llama-family decoder: embeddings, RMSNorm, q/k/v/o projections, SwiGLU MLP, final
 * norm and LM head; every layer's attention is handed to a `KVCachePolicy` (pre-RoPE q and k: the
 * cache applies RoPE from the spec). The loop runs on the CPU; the projections run where the
 * `Matmul` does (wasm SIMD, or the GPU's gemm through `DeviceMatmul`).
 * @example
 * const model = await LlamaModel.load('./my-llama');
 * const cache = new FullKVCache({ spec: model.spec, dtype: 'f32' });
 * const logits = model.prefill(promptIds, cache);
 */
export class LlamaModel implements Disposable {
  readonly config: LlamaConfig;
  /** The attention geometry to create caches with. */
  readonly spec: ModelSpec;
  readonly matmul: Matmul;
  private readonly embed: Tensor;
  private readonly layers: PreparedLayer[];
  private readonly norm: Float32Array;
  private readonly lmHead: MatmulWeight;
  /** `spec` with its defaults, which a cache's own spec must match. */
  private readonly resolvedSpec: ResolvedSpec;
  private scratch: Scratch | undefined;
  private disposed = false;

  /** @param ownsMatmul `create` made `matmul` (from a name), so `dispose` frees it; a caller's stays the caller's */
  private constructor(checkpoint: Checkpoint, matmul: Matmul, private readonly ownsMatmul: boolean) {
    const { config, spec, weights } = checkpoint;
    this.config = config;
    this.spec = spec;
    this.resolvedSpec = resolveSpec(spec);
    this.matmul = matmul;
    const prep = (l: Linear): PreparedLinear => ({ weight: matmul.prepare(l.weight), ...(l.bias ? { bias: l.bias } : {}) });
    this.layers = weights.layers.map((l) => ({
      inputNorm: l.inputNorm,
      postNorm: l.postNorm,
      proj: Object.fromEntries(Object.entries(l.proj).map(([p, lin]) => [p, prep(lin)])) as Record<Projection, PreparedLinear>,
    }));
    this.embed = weights.embed;
    this.norm = weights.norm;
    this.lmHead = matmul.prepare(weights.lmHead);
  }

  /** A model over a loaded checkpoint. */
  static async create(checkpoint: Checkpoint, options: LlamaModelOptions = {}): Promise<LlamaModel> {
    checkCheckpoint(checkpoint);
    checkOptions(options);
    let m = options.matmul;
    let backend: Backend | undefined;
    if (m === undefined || m === 'device') {
      backend = (await resolveBackend(options.backend ?? 'auto')).backend;
      m ??= backend.name === 'wasm' ? 'wasm' : 'device';
    }
    const matmul = m === 'wasm' ? await wasmMatmul(options.threads) : m === 'js' ? new JsMatmul() : m === 'device' ? new DeviceMatmul(backend!.createDevice(), true) : m;
    const owned = matmul !== options.matmul;
    try {
      return new LlamaModel(checkpoint, matmul, owned);
    } catch (err) {
      if (owned) matmul.dispose(); // one we made: a weight that did not fit frees the others
      throw err;
    }
  }

  /** `loadCheckpoint(dir)` then `create` (Node). */
  static async load(dir: string, options?: LlamaModelOptions): Promise<LlamaModel> {
    return LlamaModel.create(await loadCheckpoint(dir), options);
  }

  private buffers(rows: number): Scratch {
    if (!this.scratch || this.scratch.rows < rows) this.scratch = new Scratch(rows, this.config);
    return this.scratch;
  }

  private project(x: Float32Array, rows: number, lin: PreparedLinear, out: Float32Array): void {
    this.matmul.linear(x, rows, lin.weight, out);
    if (lin.bias) addBias(out, rows, lin.bias);
  }

  /**
   * Runs `tokens` through every layer, appending them to `cache` row `sequence`. One token on a row
   * that already holds tokens is a decode step (`cache.decode`); anything else is a prompt chunk
   * (`cache.prefill` with queries). Returns the last token's logits `[vocab]` (or all, `[T, vocab]`).
   * Tokens that would take the row past `config.maxPositions` are a `CapacityError`. A call that throws
   * leaves the row as it was.
   */
  forward(tokens: ArrayLike<number>, cache: KVCachePolicy, options: ForwardOptions = {}): Float32Array {
    const call = 'LlamaModel.forward';
    checkKeys(`${call} options`, options, FORWARD_KEYS);
    const { sequence = 0, allLogits = false } = options;
    checkSequenceOption(call, sequence, cache);
    if (typeof allLogits !== 'boolean') throw new ConfigError(`${call}: allLogits must be true or false, got ${fmt(allLogits)}`);
    const ids = this.checkCall(call, tokens, cache, sequence);
    return rollingBack(cache, sequence, () => this.run(call, ids, cache, sequence, allLogits, ids.length === 1 && cache.length(sequence) > 0));
  }

  /** The ids of a call, checked before anything runs, on a cache made for this model whose row `sequence` has positions left for them. */
  private checkCall(call: string, tokens: ArrayLike<number>, cache: KVCachePolicy, sequence: number): number[] {
    // NOTE: not left to the matmul: 'js' and a Matmul of one's own keep working after dispose.
    if (this.disposed) throw new DisposedError(`${call}: the model was disposed`);
    checkCacheSpec(call, this.resolvedSpec, cache);
    if (tokens === null || typeof tokens !== 'object' || !Number.isSafeInteger(tokens.length)) throw new ShapeError(`${call}: tokens must be an array of token ids, got ${fmt(tokens)}`);
    if (tokens.length === 0) throw new ShapeError(`${call}: no tokens`);
    const ids = Array.from(tokens);
    const V = this.config.vocabSize;
    ids.forEach((id, t) => {
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new TokenizerError(`${call}: token ${t} is ${fmt(id)}, outside the vocabulary [0, ${V})`);
    });
    checkPositions(call, this.config.maxPositions, cache, sequence, ids.length);
    return ids;
  }

  /** One pass of checked ids through every layer; a throw leaves the cache to `rollingBack`. */
  private run(call: string, tokens: number[], cache: KVCachePolicy, sequence: number, allLogits: boolean, decoding: boolean): Float32Array {
    const c = this.config;
    const T = tokens.length;
    const [H, d, Hq, Hkv] = [c.hiddenSize, c.headDim, c.queryHeads, c.kvHeads];
    const s = this.buffers(T);
    embedRows(this.embed, tokens, s.x);
    for (let layer = 0; layer < c.layers; layer++) {
      const w = this.layers[layer]!;
      // 1. Attention: RMSNorm, q/k/v, the cache's attention, o, residual.
      rmsNorm(s.x, T, H, w.inputNorm, c.rmsNormEps, s.h);
      this.project(s.h, T, w.proj.q, s.q);
      this.project(s.h, T, w.proj.k, s.k);
      this.project(s.h, T, w.proj.v, s.v);
      if (decoding) {
        // NOTE: at T = 1 token-major and head-major are the same layout: no transposes.
        const t = (data: Float32Array, heads: number): Tensor => ({ data: data.subarray(0, heads * d), shape: [1, heads, 1, d], dtype: 'f32' });
        cache.decode(layer, { query: t(s.q, Hq), key: t(s.k, Hkv), value: t(s.v, Hkv) }, { sequences: [sequence], out: s.attn.subarray(0, Hq * d) });
      } else {
        toHeads(s.q, T, Hq, d, s.qh);
        toHeads(s.k, T, Hkv, d, s.kh);
        toHeads(s.v, T, Hkv, d, s.vh);
        const t = (data: Float32Array, heads: number): Tensor => ({ data: data.subarray(0, heads * T * d), shape: [1, heads, T, d], dtype: 'f32' });
        const out = cache.prefill(layer, { queries: t(s.qh, Hq), keys: t(s.kh, Hkv), values: t(s.vh, Hkv), sequences: [sequence] })!;
        fromHeads(out.data as Float32Array, T, Hq, d, s.attn);
      }
      this.project(s.attn, T, w.proj.o, s.y);
      addInto(s.x, s.y, T * H);
      // 2. MLP: RMSNorm, SwiGLU, down, residual.
      rmsNorm(s.x, T, H, w.postNorm, c.rmsNormEps, s.h);
      this.project(s.h, T, w.proj.gate, s.gate);
      this.project(s.h, T, w.proj.up, s.up);
      swiglu(s.gate, s.up, T * c.intermediateSize);
      this.project(s.gate, T, w.proj.down, s.y);
      addInto(s.x, s.y, T * H);
    }
    // 3. Final norm and LM head, for the last token or all of them.
    const first = allLogits ? 0 : T - 1;
    const rows = T - first;
    rmsNorm(s.x.subarray(first * H), rows, H, this.norm, c.rmsNormEps, s.h);
    const logits = new Float32Array(rows * c.vocabSize);
    this.matmul.linear(s.h, rows, this.lmHead, logits);
    // NOTE: the cache refuses non-finite keys and values, but a NaN in the last norm or the LM head reaches only the logits.
    const bad = logits.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) throw new NonFiniteError(`${call}: logit ${bad % c.vocabSize} is ${logits[bad]}; a weight or activation is not finite (a corrupt checkpoint?)`);
    return logits;
  }

  /**
   * A prompt (or a continuation of one) in chunks of `chunkTokens`, every chunk through
   * `cache.prefill`, even a chunk of one token; returns the last token's logits. Every id is checked
   * before the first chunk runs (the whole prompt against `config.maxPositions` too: a `CapacityError`),
   * and a call that throws (an abort included) leaves the row as it was.
   * An `onProgress` that changes the row (a forward on it, a reset) is a `ReentrancyError`.
   */
  prefill(tokens: ArrayLike<number>, cache: KVCachePolicy, options: PrefillOptions = {}): Float32Array {
    const call = 'LlamaModel.prefill';
    checkKeys(`${call} options`, options, PREFILL_KEYS);
    const { sequence = 0, chunkTokens = 512, onProgress, signal } = options;
    checkSequenceOption(call, sequence, cache);
    if (!Number.isInteger(chunkTokens) || chunkTokens < 1) throw new ConfigError(`${call}: chunkTokens must be a positive integer, got ${fmt(chunkTokens)}`);
    if (onProgress !== undefined && typeof onProgress !== 'function') throw new ConfigError(`${call}: onProgress must be a function, got ${fmt(onProgress)}`);
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new ConfigError(`${call}: signal must be an AbortSignal, got ${fmt(signal)}`);
    const ids = this.checkCall(call, tokens, cache, sequence);
    return rollingBack(cache, sequence, () => {
      signal?.throwIfAborted();
      let logits: Float32Array = new Float32Array(0);
      for (let t = 0; t < ids.length; t += chunkTokens) {
        logits = this.run(call, ids.slice(t, t + chunkTokens), cache, sequence, false, false);
        const [held, written] = [cache.length(sequence), rowWrites(cache, sequence)];
        onProgress?.(Math.min(ids.length, t + chunkTokens), ids.length);
        // NOTE: a call in onProgress that wrote to this row would put its tokens amid the prompt's
        // (a reset and a prefill of as many tokens leave the length as it was: the write count tells).
        const now = cache.length(sequence);
        if (now !== held || rowWrites(cache, sequence) !== written) throw new ReentrancyError(`${call}: onProgress changed cache row ${sequence} from ${held} to ${now} tokens${now === held ? ' (another call wrote to it)' : ''}; calls on one row must not nest`);
        signal?.throwIfAborted();
      }
      return logits;
    });
  }

  /**
   * Frees the matmul the model made (its weights: a wasm heap, device buffers), not one passed to
   * `create` (its owner disposes it); the model's calls are then a `DisposedError`.
   */
  dispose(): void {
    this.disposed = true;
    if (this.ownsMatmul) this.matmul.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** Throws a ConfigError for what is not a checkpoint: left to the constructor, null is a TypeError and `{}` a spec error that names no call. */
function checkCheckpoint(checkpoint: unknown): void {
  const c = checkpoint as Record<string, unknown> | null;
  const object = (x: unknown) => typeof x === 'object' && x !== null;
  if (!object(c) || !object(c!.config) || !object(c!.spec) || !object(c!.weights)) {
    throw new ConfigError(`LlamaModel.create: checkpoint must be a Checkpoint ({ config, spec, weights }, from loadCheckpoint or readCheckpoint), got ${fmt(checkpoint)}`);
  }
  // NOTE: every call checks its positions against it; a config built by hand without one would check nothing.
  const max = (c!.config as Record<string, unknown>).maxPositions;
  if (!Number.isSafeInteger(max) || (max as number) < 1) throw new ConfigError(`LlamaModel.create: checkpoint.config.maxPositions must be a positive integer (max_position_embeddings), got ${fmt(max)}`);
}

/** Throws a ConfigError for an option `create` does not know or a value it cannot use. */
function checkOptions(options: LlamaModelOptions): void {
  checkKeys('LlamaModel.create options', options, ['matmul', 'threads', 'backend']);
  const { matmul, threads, backend } = options;
  const own = (m: object) => ['prepare', 'linear', 'dispose'].every((f) => typeof (m as Record<string, unknown>)[f] === 'function');
  const named = matmul === 'wasm' || matmul === 'device' || matmul === 'js';
  if (matmul !== undefined && !named && !(typeof matmul === 'object' && matmul !== null && own(matmul))) {
    throw new ConfigError(`LlamaModel.create: matmul must be 'wasm', 'device', 'js' or a Matmul (prepare, linear, dispose), got ${fmt(matmul)}`);
  }
  if (threads !== undefined) checkThreads('LlamaModel', threads);
  if (backend !== undefined && typeof backend !== 'string') throw new ConfigError(`LlamaModel.create: backend must be a backend name ('auto', 'cuda', 'wasm'), got ${fmt(backend)}`);
}

/** `'wasm'`: on several threads under Node where there are several cores (or `threads` asks), else on this one. */
async function wasmMatmul(threads?: number): Promise<Matmul> {
  const node = typeof process !== 'undefined' && !!process.versions?.node;
  // NOTE: imported here, not at the top, so that browser bundles never see node:worker_threads.
  const n = threads ?? (node ? (await import('node:os')).availableParallelism() : 1);
  if (n <= 1 || !node) return WasmMatmul.create();
  const { ThreadedMatmul } = await import('./ThreadedMatmul.js');
  return ThreadedMatmul.create({ threads: n });
}
