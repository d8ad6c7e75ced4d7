// The retrieval tasks of bench/eval/tasks.json, drawn as TASKS.md says (scripts/gpu/train/tasks.py
// is the Python twin: one seed, the same bytes).
import { constants } from 'node:buffer';
import { readFileSync } from 'node:fs';
import { fmt } from '../../packages/shadowkv/src/config.js';
import { ConfigError } from '../../packages/shadowkv/src/errors/ConfigError.js';

/** The shared spec (tasks.json). */
export interface TaskSpec {
  version: number;
  vocab: { bytes: number; specials: string[] };
  repetitiveFiller: string;
  words: { subjects: string[]; verbs: string[]; objects: string[]; places: string[] };
  needleKeys: string[];
  tasks: Record<string, TaskDef>;
}

interface TaskDef {
  filler: 'repetitive' | 'varied' | 'pairs';
  needles?: number;
  value: { digits?: number; hex?: number };
  key?: { hex: number };
  needle?: string;
  pair?: string;
  question: string;
}

/** One prompt and the answer the model must continue it with. */
export interface Sample {
  task: string;
  /** Target length in tokens (`<bos>` + bytes); the prompt is at most this long with its answer. */
  length: number;
  index: number;
  seed: number;
  /** Context and question, without `<bos>`. */
  prompt: string;
  /** What must follow the prompt: `" " + value`. */
  answer: string;
}

export const TASK_SPEC: TaskSpec = JSON.parse(readFileSync(new URL('./tasks.json', import.meta.url), 'utf8'));
export const TASK_NAMES = Object.keys(TASK_SPEC.tasks);

/** FNV-1a, 32 bits, over the string's UTF-16 code units (the seeds are ASCII). */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h >>> 0;
}

/** mulberry32: a 32-bit state, `next()` in [0, 1). */
export class Mulberry32 {
  constructor(private state: number) {}
  next(): number {
    this.state = (this.state + 0x6d2b79f5) | 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

const bytes = (s: string) => Buffer.byteLength(s, 'utf8');
const HEX = '0123456789abcdef';

function value(rng: Mulberry32, v: TaskDef['value']): string {
  if (v.hex) return Array.from({ length: v.hex }, () => HEX[rng.int(16)]).join('');
  let s = '';
  for (let i = 0; i < v.digits!; i++) {
    let x = rng.int(10);
    while (i === 0 && x === 0) x = rng.int(10);
    s += x;
  }
  return s;
}

const fill = (t: string, key: string, val: string) => t.replaceAll('{key}', key).replaceAll('{value}', val);

/** The longest prompt a sample can be: one JS string (V8's limit), so no length past it can be drawn. */
export const MAX_SAMPLE_LENGTH = constants.MAX_STRING_LENGTH;

/**
 * The shortest length every sample of `task` fits: `<bos>`, the needles, question and answer at
 * their longest draw (the longest keys), and for `kv_lookup` one pair to ask about.
 */
export function minSampleLength(task: string, spec = TASK_SPEC): number {
  const def = taskDef(task, spec);
  const value = '0'.repeat(def.value.digits ?? def.value.hex!);
  if (def.filler === 'pairs') {
    const stand = '0'.repeat(def.key!.hex);
    return 1 + bytes(fill(def.question, stand, '')) + bytes(` ${value}`) + bytes(fill(def.pair!, stand, value));
  }
  const keys = task === 'passkey' ? Array<string>(def.needles!).fill('') : [...spec.needleKeys].sort((a, b) => bytes(b) - bytes(a)).slice(0, def.needles!);
  return 1 + keys.reduce((n, k) => n + bytes(fill(def.needle!, k, value)), 0) + bytes(fill(def.question, keys[0]!, '')) + bytes(` ${value}`);
}

function taskDef(task: string, spec: TaskSpec): TaskDef {
  const def = typeof task === 'string' && Object.hasOwn(spec.tasks, task) ? spec.tasks[task] : undefined;
  if (!def) throw new ConfigError(`drawSample: unknown task ${fmt(task)}; known: ${Object.keys(spec.tasks).join(', ')}`);
  return def;
}

/**
 * Sample `index` of a task at a length, for split `eval` or `train`. A `ConfigError` for an unknown
 * task or split, an index that is not a non-negative integer, or a length that is not an integer in
 * [minSampleLength(task), MAX_SAMPLE_LENGTH] (a NaN length drew filler forever; a short kv_lookup had no pair to ask).
 */
export function drawSample(task: string, length: number, index: number, split: 'eval' | 'train' = 'eval', spec = TASK_SPEC): Sample {
  const def = taskDef(task, spec);
  const min = minSampleLength(task, spec);
  if (!Number.isSafeInteger(length) || length < min || length > MAX_SAMPLE_LENGTH) {
    throw new ConfigError(`drawSample: length must be an integer in [${min}, ${MAX_SAMPLE_LENGTH}] for ${task} (tokens, <bos> and answer included), got ${fmt(length)}`);
  }
  if (!Number.isSafeInteger(index) || index < 0) throw new ConfigError(`drawSample: index must be a non-negative integer, got ${fmt(index)}`);
  if (split !== 'eval' && split !== 'train') throw new ConfigError(`drawSample: split must be 'eval' or 'train', got ${fmt(split)}`);
  const seed = fnv1a32(`${split}:${task}:${length}:${index}`);
  const rng = new Mulberry32(seed);
  const pieces: string[] = [];
  let question: string;
  let answer: string;
  let needles: string[] = [];
  if (def.filler === 'pairs') {
    // 3-4. Pairs fill the room; one of them is asked.
    const stand = '0'.repeat(def.key!.hex);
    let room = length - 1 - bytes(fill(def.question, stand, '')) - bytes(` ${'0'.repeat(def.value.hex!)}`);
    const pairs: [string, string][] = [];
    const pairBytes = bytes(fill(def.pair!, stand, '0'.repeat(def.value.hex!)));
    while (room >= pairBytes) {
      const k = value(rng, { hex: def.key!.hex });
      pairs.push([k, value(rng, def.value)]);
      room -= pairBytes;
    }
    const [k, v] = pairs[rng.int(pairs.length)]!;
    pairs.forEach(([pk, pv]) => pieces.push(fill(def.pair!, pk, pv)));
    question = fill(def.question, k, '');
    answer = ` ${v}`;
  } else {
    // 1-2. Needles, the asked one, question and answer.
    const keys: string[] = [];
    const values: string[] = [];
    for (let i = 0; i < def.needles!; i++) {
      let key = '';
      if (task !== 'passkey') {
        do key = spec.needleKeys[rng.int(spec.needleKeys.length)]!;
        while (keys.includes(key));
      }
      keys.push(key);
      values.push(value(rng, def.value));
    }
    const asked = rng.int(def.needles!);
    needles = keys.map((k, i) => fill(def.needle!, k, values[i]!));
    question = fill(def.question, keys[asked]!, '');
    answer = ` ${values[asked]}`;
    // 3-4. Filler in the room left.
    let room = length - 1 - needles.reduce((n, s) => n + bytes(s), 0) - bytes(question) - bytes(answer);
    if (def.filler === 'repetitive') {
      for (const n = bytes(spec.repetitiveFiller); room >= n; room -= n) pieces.push(spec.repetitiveFiller);
    } else {
      const w = spec.words;
      for (;;) {
        const s = `${w.subjects[rng.int(12)]} ${w.verbs[rng.int(12)]} ${w.objects[rng.int(12)]} ${w.places[rng.int(12)]}. `;
        if (bytes(s) > room) break;
        pieces.push(s);
        room -= bytes(s);
      }
    }
  }
  // 5. Needles at drawn depths (before piece depth_i), in order among equals.
  const depths = needles.map(() => rng.int(pieces.length + 1));
  const out: string[] = [];
  for (let p = 0; p <= pieces.length; p++) {
    needles.forEach((n, i) => depths[i] === p && out.push(n));
    if (p < pieces.length) out.push(pieces[p]!);
  }
  // 6. Prompt = context + question.
  return { task, length, index, seed, prompt: out.join('') + question, answer };
}
