// The pre-tokenizers of a byte-level BPE tokenizer.json: Split (regex, "Isolated") and ByteLevel,
// alone or in a Sequence. Patterns are written for Rust's regex engines and run here as JS `u` regexes.
import { fmt } from '../../../shadowkv/src/policies/validate.js';
import { TokenizerError } from '../errors/TokenizerError.js';

/** GPT-2's pattern, which ByteLevel applies when its `use_regex` is true. */
const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/** Cuts text into the pieces BPE runs on, each separately. */
export type PreTokenizer = (text: string) => string[];

/**
 * Rewrites `(?i:...)` groups (Llama-3's contractions), which JS regexes before ES2025 lack, into
 * `(?:...)` with each ASCII letter as `[xX]`.
 */
export function caseInsensitiveGroups(pattern: string): string {
  let out = '';
  for (let i = 0; i < pattern.length; ) {
    if (!pattern.startsWith('(?i:', i)) {
      out += pattern[i]!;
      if (pattern[i] === '\\') out += pattern[i + 1] ?? '';
      i += pattern[i] === '\\' ? 2 : 1;
      continue;
    }
    out += '(?:';
    let depth = 1;
    for (i += 4; depth > 0; i++) {
      const ch = pattern[i];
      if (ch === undefined) throw new TokenizerError(`pre_tokenizer pattern: unbalanced '(?i:' group in ${JSON.stringify(pattern)}`);
      if (ch === '[') throw new TokenizerError(`pre_tokenizer pattern: a character class inside '(?i:' is not supported: ${JSON.stringify(pattern)}`);
      if (ch === '\\') out += ch + pattern[++i];
      else if (/[a-z]/i.test(ch)) out += `[${ch.toLowerCase()}${ch.toUpperCase()}]`;
      else {
        depth += ch === '(' ? 1 : ch === ')' ? -1 : 0;
        out += ch;
      }
    }
  }
  return out;
}

/** Splits keeping both the matches and the text between them, in order (HF's "Isolated" behavior). */
function isolate(regex: RegExp): PreTokenizer {
  return (text) => {
    const pieces: string[] = [];
    let last = 0;
    for (const m of text.matchAll(regex)) {
      if (m.index > last) pieces.push(text.slice(last, m.index));
      if (m[0].length) pieces.push(m[0]);
      last = m.index + m[0].length;
    }
    if (last < text.length) pieces.push(text.slice(last));
    return pieces;
  };
}

function compile(pattern: string): RegExp {
  try {
    return new RegExp(caseInsensitiveGroups(pattern), 'gu');
  } catch (err) {
    throw new TokenizerError(`pre_tokenizer pattern ${JSON.stringify(pattern)} does not compile as a JS regex: ${(err as Error).message}`);
  }
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The pre-tokenizer a `pre_tokenizer` object describes, and whether it has the ByteLevel step
 * (required: this package runs byte-level BPE only).
 */
export function preTokenizer(config: unknown): { split: PreTokenizer; byteLevel: boolean } {
  const steps: PreTokenizer[] = [];
  let byteLevel = false;
  const add = (value: unknown) => {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new TokenizerError(`pre_tokenizer: a step must be an object with a type, got ${fmt(value)}`);
    const step = value as Record<string, unknown>;
    if (step.type === 'Sequence') {
      if (!Array.isArray(step.pretokenizers)) throw new TokenizerError(`pre_tokenizer Sequence needs a list of pretokenizers, got ${fmt(step.pretokenizers)}`);
      return step.pretokenizers.forEach(add);
    }
    if (step.type === 'Split') {
      const p = step.pattern as { Regex?: unknown; String?: unknown } | undefined;
      const source = typeof p?.Regex === 'string' ? p.Regex : typeof p?.String === 'string' ? escape(p.String) : undefined;
      if (source === undefined) throw new TokenizerError(`pre_tokenizer Split needs a pattern {Regex} or {String}, got ${JSON.stringify(step.pattern)}`);
      if (step.behavior !== 'Isolated' || step.invert === true) throw new TokenizerError(`pre_tokenizer Split: behavior '${String(step.behavior)}'${step.invert ? ' inverted' : ''} is not supported (only Isolated)`);
      steps.push(isolate(compile(source)));
      return;
    }
    if (step.type === 'ByteLevel') {
      byteLevel = true;
      if (step.add_prefix_space === true) steps.push((t) => (t.startsWith(' ') ? [t] : [` ${t}`]));
      if (step.use_regex !== false) steps.push(isolate(compile(GPT2_PATTERN)));
      return;
    }
    throw new TokenizerError(`pre_tokenizer type '${String(step.type)}' is not supported (byte-level BPE: Split, ByteLevel, Sequence)`);
  };
  if (config !== null && config !== undefined) add(config);
  return { split: (text) => steps.reduce((pieces, step) => pieces.flatMap(step), [text]), byteLevel };
}
