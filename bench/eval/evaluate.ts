// The accuracy evaluation: every (task, length, sample) prompt runs through the model once with
// exact attention, recording each layer's keys and values; every policy then gets the same
// prefill replayed (no second forward pass: prefill attention is exact for every policy, so the
// layers' inputs are the same) and decodes the answer greedily with its own attention.
import type { KVCachePolicy, PrefillInput } from '../../packages/shadowkv/src/policies/KVCachePolicy.js';
import { createCache, listPolicies } from '../../packages/shadowkv/src/index.js';
import type { Tensor } from '../../packages/shadowkv/src/tensor.js';
import { argmax, ByteTokenizer, fitCacheOptions, type LlamaModel } from '../../packages/llama/src/index.js';
import { drawSample, TASK_SPEC, type Sample } from './tasks.js';

/** One policy configuration the evaluation runs. */
export interface PolicyRun {
  /** Registered policy name. */
  policy: string;
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
  /** Tokens the last decode step attended per kv head, as the policy's `stats()` counts them (0: it does not count). */
  attended: number;
}

export interface EvalSettings {
  lengths: number[];
  budgets: number[];
  tasks: string[];
  samples: number;
  /** Policy names; default: every registered one (`full`, `shadowkv`, `streaming`, …). */
  policies?: string[];
  /** Tokens per prefill chunk. Default 512. */
  chunkTokens?: number;
  /** The caches' backend (`'wasm'`, `'cuda'`, `'auto'`); the model's matmul is chosen apart (`LlamaModel`'s `backend`). Default `'wasm'`. */
  backend?: string;
  /** Called once per prompt (policies included). */
  onPrompt?: (done: number, total: number, note: string) => void;
}

const tokenizer = new ByteTokenizer({ specials: TASK_SPEC.vocab.specials });
const BOS = tokenizer.tokenId('<bos>')!;

// Policies whose prefill reads the prompt's queries (SnapKV's observation window votes): their replay carries them.
const READS_QUERIES = new Set(['snapkv']);

/**
 * The policy configurations for a prompt of `tokens` tokens answered in `newTokens`. Every budgeted
 * policy attends as many tokens per step as ShadowKV at that budget (its budget + outliers + local
 * window, from `fitCacheOptions`); a policy unknown here runs once with its own defaults.
 */
export function policyRuns(model: LlamaModel, names: readonly string[], budgets: readonly number[], tokens: number, newTokens: number): PolicyRun[] {
  const runs: PolicyRun[] = [];
  for (const policy of names) {
    if (!['shadowkv', 'streaming', 'quest', 'snapkv'].includes(policy)) {
      runs.push({ policy, options: {} });
      continue;
    }
    for (const budget of budgets) {
      const o = fitCacheOptions(model.spec, { promptTokens: tokens, maxNewTokens: newTokens, budgetFraction: budget }).options;
      const attended = o.budget + o.outlierChunks * o.chunkSize + o.localTokens;
      // Every prompt is compressed, however short (the tiny runs): the threshold is what the fit asks or less.
      const options =
        policy === 'shadowkv' ? { ...o, denseThreshold: Math.min(o.denseThreshold, Math.max(1, tokens - o.localTokens)) }
        : policy === 'streaming' ? { sinkTokens: 4, windowTokens: attended - 4 }
        : policy === 'quest' ? { chunkSize: 16, budget: Math.max(16, Math.floor(attended / 16) * 16) }
        : { budget: attended };
      runs.push({ policy, budget, attended, options });
    }
  }
  return runs;
}

interface RecordedPrefill {
  layer: number;
  keys: Tensor;
  values: Tensor;
  queries?: Tensor;
}

/** A cache that records every prefill call's keys and values (copies) on their way to `inner`. */
function recording(inner: KVCachePolicy, calls: RecordedPrefill[], withQueries: boolean): KVCachePolicy {
  const copy = (t: Tensor): Tensor => ({ ...t, data: t.data.slice() as Tensor['data'] });
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === 'prefill') {
        return (layer: number, input: PrefillInput) => {
          calls.push({ layer, keys: copy(input.keys), values: copy(input.values), ...(withQueries && input.queries ? { queries: copy(input.queries) } : {}) });
          return target.prefill(layer, input);
        };
      }
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

/** Greedy answer of `n` tokens: the first from the prompt's logits, the rest decoded through `cache`. */
function answer(model: LlamaModel, cache: KVCachePolicy, logits: Float32Array, n: number): number[] {
  const ids = [argmax(logits)];
  while (ids.length < n) ids.push(argmax(model.forward([ids.at(-1)!], cache)));
  return ids;
}

/** Runs the grid; returns every answer. */
export async function evaluate(model: LlamaModel, s: EvalSettings): Promise<{ answers: Answer[]; runs: Record<number, PolicyRun[]> }> {
  const names = s.policies ?? listPolicies();
  const backend = s.backend ?? 'wasm';
  const withQueries = names.some((p) => READS_QUERIES.has(p));
  const answers: Answer[] = [];
  const runsByLength: Record<number, PolicyRun[]> = {};
  const total = s.tasks.length * s.lengths.length * s.samples;
  let done = 0;
  for (const length of s.lengths)
    for (const task of s.tasks)
      for (let index = 0; index < s.samples; index++) {
        const sample: Sample = drawSample(task, length, index);
        const ids = [BOS, ...tokenizer.encode(sample.prompt)];
        const want = tokenizer.encode(sample.answer);
        const runs = (runsByLength[length] ??= policyRuns(model, names, s.budgets, ids.length, want.length));
        // 1. One forward pass with exact attention, recording each layer's prefill.
        const calls: RecordedPrefill[] = [];
        const full = await createCache({ spec: model.spec, policy: 'full', backend, maxTokens: ids.length + want.length });
        const logits = model.prefill(ids, recording(full, calls, withQueries), { chunkTokens: s.chunkTokens ?? 512 });
        full.dispose();
        // 2. Each policy: the recorded prefill replayed, then its own greedy answer.
        for (const run of runs) {
          const cache = await createCache({ spec: model.spec, policy: run.policy, backend, maxTokens: ids.length + want.length, options: run.options as never });
          try {
            const queries = READS_QUERIES.has(run.policy);
            for (const c of calls) cache.prefill(c.layer, { keys: c.keys, values: c.values, ...(queries ? { queries: c.queries } : {}) });
            const got = tokenizer.decode(answer(model, cache, logits, want.length));
            const attended = cache.stats().lastAttendedTokens;
            answers.push({ task, length, index, policy: run.policy, ...(run.budget !== undefined ? { budget: run.budget } : {}), expected: sample.answer, got, correct: got === sample.answer, attended });
          } finally {
            cache.dispose();
          }
        }
        s.onPrompt?.(++done, total, `${task} @ ${length}`);
      }
  return { answers, runs: runsByLength };
}
