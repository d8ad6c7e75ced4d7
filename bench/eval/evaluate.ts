// The accuracy evaluation: every (task, length, sample) prompt runs through the model once with
// exact attention, recording each layer's keys and values; every policy then gets the same
// prefill replayed (no second forward pass: prefill attention is exact for every policy, so the
// layers' inputs are the same) and decodes the answer greedily with its own attention.
import type { DecodeInput, DecodeOptions, KVCachePolicy, PrefillInput } from '../../packages/shadowkv/src/policies/KVCachePolicy.js';
import { createCache, listPolicies, toFloat32 } from '../../packages/shadowkv/src/index.js';
import type { Tensor } from '../../packages/shadowkv/src/tensor.js';
import { argmax, ByteTokenizer, fitCacheOptions, type LlamaModel } from '../../packages/llama/src/index.js';
import { cosine } from '../../packages/shadowkv/src/testing/metrics.js';
import { drawSample, TASK_SPEC, type Sample } from './tasks.js';

/** One policy configuration the evaluation runs. */
export interface PolicyRun {
  /** Registered policy name, or a variant as given, such as `shadowkv:chunkSize=4` (see `base`). */
  policy: string;
  /** A variant's registered policy (its options are the base's at the same budget, with the variant's on top). */
  base?: string;
  /** Budget as a share of the context (undefined: the policy has none, e.g. `full`). */
  budget?: number;
  /** Tokens a decode step attends at the start of the answer, as configured. */
  attended?: number;
  options: Record<string, unknown>;
}

/** One answer. */
export interface Answer {
  task: string;
  length: number;
  index: number;
  policy: string;
  budget?: number;
  expected: string;
  got: string;
  correct: boolean;
  /** Tokens the last decode step attended per kv head, averaged over layers, as the policy's `stats()` counts them (`stepAttendedTokens`; 0: it does not count). */
  attended: number;
  /**
   * Output agreement with `full` at the first decode step: the mean cosine, over layers and query
   * heads, of this policy's attention output and exact attention's on the same inputs.
   */
  agreement?: number;
}

export interface EvalSettings {
  lengths: number[];
  budgets: number[];
  tasks: string[];
  samples: number;
  /** Policy names; default: every registered one (`full`, `shadowkv`, `streaming`, …). */
  policies?: string[];
  /** Extra runs of a policy with some options changed, e.g. `shadowkv:chunkSize=4` (reported as its own row at every budget). */
  variants?: string[];
  /** Tokens per prefill chunk. Default 512. */
  chunkTokens?: number;
  /** The caches' backend (`'wasm'`, `'cuda'`, `'auto'`); the model's matmul is chosen apart (`LlamaModel`'s `backend`). Default `'wasm'`. */
  backend?: string;
  /** Called once per prompt (policies included). */
  onPrompt?: (done: number, total: number, note: string) => void;
  /** Answers from an earlier, interrupted run (`--resume`): a prompt that has all its answers here is not run again. */
  earlier?: readonly Answer[];
  /** Wall-clock time (ms since the epoch) after which no new prompt starts; the rest are reported as not run. */
  deadline?: number;
  /** Called with each finished prompt's answers and timings (the evaluation appends them to `<out>.partial.jsonl`). */
  onAnswers?: (done: PromptDone) => void;
}

/** One prompt's answers and where its time went. */
export interface PromptDone {
  task: string;
  length: number;
  index: number;
  /** Seconds of the one exact forward pass. */
  prefillSeconds: number;
  /** Seconds per policy run (`label`: `policy` or `policy@budget`): replay, compression, decoding. */
  policySeconds: Record<string, number>;
  answers: Answer[];
}

/** The tasks' tokenizer: bytes + the specials of tasks.json (the model was trained on it). */
export const tokenizer = new ByteTokenizer({ specials: TASK_SPEC.vocab.specials });
const BOS = tokenizer.tokenId('<bos>')!;

/** A sample's prompt as token ids (`<bos>` first) and its answer's ids. */
export function encodeSample(sample: Sample): { ids: number[]; want: number[] } {
  return { ids: [BOS, ...tokenizer.encode(sample.prompt)], want: tokenizer.encode(sample.answer) };
}

// Policies whose prefill reads the prompt's queries (SnapKV's observation window votes): their replay carries them.
const READS_QUERIES = new Set(['snapkv']);

/**
 * The policy configurations for a prompt of `tokens` tokens answered in `newTokens`. Every budgeted
 * policy attends as many tokens per step as ShadowKV at that budget (its budget + outliers + local
 * window, from `fitCacheOptions`); a policy unknown here runs once with its own defaults.
 */
export function policyRuns(model: LlamaModel, names: readonly string[], budgets: readonly number[], tokens: number, newTokens: number, variants: readonly string[] = []): PolicyRun[] {
  const runs: PolicyRun[] = [];
  const budgeted = (policy: string) => ['shadowkv', 'streaming', 'quest', 'snapkv'].includes(policy);
  const optionsAt = (policy: string, budget: number) => {
    const o = fitCacheOptions(model.spec, { promptTokens: tokens, maxNewTokens: newTokens, budgetFraction: budget, hints: model.config.cacheHints }).options;
    const attended = o.budget + o.outlierChunks * o.chunkSize + o.localTokens;
    // Every prompt is compressed, however short (the tiny runs): the threshold is what the fit asks or less.
    const options: Record<string, number> =
      policy === 'shadowkv' ? { ...o, denseThreshold: Math.min(o.denseThreshold, Math.max(1, tokens - o.localTokens)) }
      : policy === 'streaming' ? { sinkTokens: 4, windowTokens: attended - 4 }
      : policy === 'quest' ? { chunkSize: 16, budget: Math.max(16, Math.floor(attended / 16) * 16) }
      : { budget: attended };
    return { attended, options };
  };
  for (const policy of names) {
    if (!budgeted(policy)) runs.push({ policy, options: {} });
    else for (const budget of budgets) runs.push({ policy, budget, ...optionsAt(policy, budget) });
  }
  for (const v of variants) {
    const { base, overrides } = parseVariant(v);
    if (!budgeted(base)) {
      runs.push({ policy: v, base, options: overrides });
      continue;
    }
    for (const budget of budgets) {
      const { attended, options } = optionsAt(base, budget);
      const o = { ...options, ...overrides };
      // A budget in whole chunks of the variant's chunk size (ShadowKV and Quest select chunks).
      if (o.chunkSize && o.budget) o.budget = Math.max(o.chunkSize, Math.floor(o.budget / o.chunkSize) * o.chunkSize);
      runs.push({ policy: v, base, budget, attended, options: o });
    }
  }
  return runs;
}

/** `shadowkv:chunkSize=4:outlierChunks=8` -> the base policy and its numeric option overrides. */
export function parseVariant(v: string): { base: string; overrides: Record<string, number> } {
  const [base, ...pairs] = v.split(':');
  const overrides: Record<string, number> = {};
  for (const pair of pairs) {
    const [key, value] = pair.split('=');
    if (!key || value === undefined || !Number.isFinite(Number(value))) throw new Error(`eval: variant '${v}': '${pair}' is not option=number`);
    overrides[key] = Number(value);
  }
  if (!base || !listPolicies().includes(base)) throw new Error(`eval: variant '${v}': '${base}' is not a registered policy (${listPolicies().join(', ')})`);
  return { base, overrides };
}

/** One layer's `cache.prefill` call as the exact forward pass made it. */
export interface RecordedPrefill {
  layer: number;
  keys: Tensor;
  values: Tensor;
  queries?: Tensor;
}

/** A prompt's exact forward pass, once: the logits after its last token and every layer's prefill calls. */
export interface SharedPrefill {
  logits: Float32Array;
  calls: RecordedPrefill[];
}

/** `inner` with its method `name` replaced by `impl` (which may call `inner`'s own); every other member is `inner`'s. */
export function intercept(inner: KVCachePolicy, name: 'prefill' | 'decode', impl: (...args: never[]) => unknown): KVCachePolicy {
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === name) return impl;
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

/** A cache that records every prefill call's keys and values (copies) on their way to `inner`. */
function recording(inner: KVCachePolicy, calls: RecordedPrefill[], withQueries: boolean): KVCachePolicy {
  const copy = (t: Tensor): Tensor => ({ ...t, data: t.data.slice() as Tensor['data'] });
  return intercept(inner, 'prefill', (layer: number, input: PrefillInput) => {
    calls.push({ layer, keys: copy(input.keys), values: copy(input.values), ...(withQueries && input.queries ? { queries: copy(input.queries) } : {}) });
    return inner.prefill(layer, input);
  });
}

/**
 * Runs `ids` through `model` once with exact attention (`full` on `backend`), recording each layer's
 * prefill (with the queries when `withQueries`, for policies that vote with them).
 */
export async function prefillOnce(model: LlamaModel, ids: number[], o: { backend: string; maxTokens: number; chunkTokens?: number; withQueries?: boolean; onProgress?: (done: number, total: number) => void }): Promise<SharedPrefill> {
  const calls: RecordedPrefill[] = [];
  const full = await createCache({ spec: model.spec, policy: 'full', backend: o.backend, maxTokens: o.maxTokens });
  try {
    const logits = model.prefill(ids, recording(full, calls, o.withQueries ?? false), { chunkTokens: o.chunkTokens ?? 512, ...(o.onProgress ? { onProgress: o.onProgress } : {}) });
    return { logits, calls };
  } finally {
    full.dispose();
  }
}

/**
 * Feeds a recorded prefill to `cache`; where `policy` votes with queries, each layer's last call
 * carries them (the prompt's last window, the question: an earlier call's vote would be replaced by
 * it, and computing it would only cost time).
 */
export function replayPrefill(cache: KVCachePolicy, policy: string, shared: SharedPrefill): void {
  const last = new Map(shared.calls.map((c, i) => [c.layer, i]));
  const queries = READS_QUERIES.has(policy);
  shared.calls.forEach((c, i) => cache.prefill(c.layer, { keys: c.keys, values: c.values, ...(queries && last.get(c.layer) === i ? { queries: c.queries } : {}) }));
}

/**
 * Greedy answer of `n` tokens: the first from the prompt's logits, the rest decoded through `cache`.
 * With `ref` (a `full` cache holding the same prompt), the first decode step also runs every layer's
 * inputs through `ref` and `agreement` gets the mean cosine of the two outputs; `ref` is then
 * cropped back to the prompt, ready for the next policy.
 */
export function answer(model: LlamaModel, cache: KVCachePolicy, logits: Float32Array, n: number, ref?: KVCachePolicy): { ids: number[]; agreement?: number } {
  const ids = [argmax(logits)];
  let agreement: number | undefined;
  while (ids.length < n) {
    if (ids.length > 1 || !ref) {
      ids.push(argmax(model.forward([ids.at(-1)!], cache)));
      continue;
    }
    const cosines: number[] = [];
    const both = intercept(cache, 'decode', (layer: number, input: DecodeInput, options?: DecodeOptions) => {
      const ours = toFloat32(cache.decode(layer, input, options));
      headCosines(ours, toFloat32(ref.decode(layer, input)), model.spec.headDim, cosines);
      return { data: ours, shape: [1, model.spec.queryHeads, 1, model.spec.headDim], dtype: 'f32' };
    });
    const length = ref.length(0);
    try {
      ids.push(argmax(model.forward([ids.at(-1)!], both)));
    } finally {
      ref.crop(0, length);
    }
    agreement = cosines.reduce((a, b) => a + b, 0) / cosines.length;
  }
  return { ids, ...(agreement !== undefined ? { agreement } : {}) };
}

/** Cosine of each head's `d`-vector in `a` and `b`, appended to `out` (1 where both are zero). */
function headCosines(a: Float32Array, b: Float32Array, d: number, out: number[]): void {
  const zero = (x: Float32Array, o: number) => !x.subarray(o, o + d).some((v) => v !== 0);
  for (let o = 0; o < a.length; o += d) out.push(zero(a, o) && zero(b, o) ? 1 : cosine(a, b, o, o + d));
}

const runKey = (policy: string, budget?: number) => (budget === undefined ? policy : `${policy}@${budget}`);

/** Runs the grid; returns every answer (the earlier ones included) and the prompts it did not reach before the deadline. */
export async function evaluate(model: LlamaModel, s: EvalSettings): Promise<{ answers: Answer[]; runs: Record<number, PolicyRun[]>; notRun: string[] }> {
  const names = s.policies ?? listPolicies();
  const backend = s.backend ?? 'wasm';
  const withQueries = [...names, ...(s.variants ?? []).map((v) => parseVariant(v).base)].some((p) => READS_QUERIES.has(p));
  const answers: Answer[] = [];
  const notRun: string[] = [];
  const runsByLength: Record<number, PolicyRun[]> = {};
  const total = s.tasks.length * s.lengths.length * s.samples;
  let done = 0;
  for (const length of s.lengths)
    for (const task of s.tasks)
      for (let index = 0; index < s.samples; index++) {
        const sample: Sample = drawSample(task, length, index);
        const { ids, want } = encodeSample(sample);
        const runs = (runsByLength[length] ??= policyRuns(model, names, s.budgets, ids.length, want.length, s.variants));
        // 0. A prompt an earlier run answered for every policy run is taken as it was.
        const before = (s.earlier ?? []).filter((a) => a.task === task && a.length === length && a.index === index);
        if (runs.every((r) => before.some((a) => runKey(a.policy, a.budget) === runKey(r.policy, r.budget)))) {
          answers.push(...before);
          s.onPrompt?.(++done, total, `${task} @ ${length} (earlier run)`);
          continue;
        }
        if (s.deadline !== undefined && Date.now() > s.deadline) {
          notRun.push(`${task}@${length}#${index}`);
          continue;
        }
        // 1. One forward pass with exact attention, recording each layer's prefill.
        const maxTokens = ids.length + want.length;
        let t0 = performance.now();
        const shared = await prefillOnce(model, ids, { backend, maxTokens, withQueries, ...(s.chunkTokens ? { chunkTokens: s.chunkTokens } : {}) });
        const prompt: PromptDone = { task, length, index, prefillSeconds: (performance.now() - t0) / 1000, policySeconds: {}, answers: [] };
        // The reference for output agreement: exact attention over the same prompt.
        using ref = await createCache({ spec: model.spec, policy: 'full', backend, maxTokens });
        replayPrefill(ref, 'full', shared);
        // 2. Each policy: the recorded prefill replayed, then its own greedy answer.
        for (const run of runs) {
          t0 = performance.now();
          const cache = await createCache({ spec: model.spec, policy: run.base ?? run.policy, backend, maxTokens, options: run.options as never });
          try {
            replayPrefill(cache, run.base ?? run.policy, shared);
            const { ids: out, agreement } = answer(model, cache, shared.logits, want.length, run.policy === 'full' ? undefined : ref);
            const got = tokenizer.decode(out);
            const attended = cache.stats().stepAttendedTokens;
            prompt.answers.push({ task, length, index, policy: run.policy, ...(run.budget !== undefined ? { budget: run.budget } : {}), expected: sample.answer, got, correct: got === sample.answer, attended, ...(agreement !== undefined ? { agreement } : {}) });
          } finally {
            cache.dispose();
          }
          prompt.policySeconds[runKey(run.policy, run.budget)] = (performance.now() - t0) / 1000;
        }
        answers.push(...prompt.answers);
        s.onAnswers?.(prompt);
        s.onPrompt?.(++done, total, `${task} @ ${length}`);
      }
  return { answers, runs: runsByLength, notRun };
}
