// Mutation tests of the conformance kit (shadowkv/testing): the example plugin with one plausible
// author mistake each must FAIL the kit, with a message that points at the mistake, while the
// unmutated copies pass. The kit is run as a plugin author runs it (runPolicyConformance in a vitest
// file): this file forks itself as such a run (SKV_KIT_MUTANTS=1, JSON report), then checks each
// mutant's failures here.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { LandmarkWindowCache as Example, type LandmarkWindowOptions } from '../../examples/custom-policy/LandmarkWindowCache.js';
import { at, attendRows, registerPolicy, rowRuns, type Attended, type CacheConfig, type ChunkState, type Runtime, type View } from '../../packages/shadowkv/src/backend.js';
import type { MemoryEstimate } from '../../packages/shadowkv/src/estimateMemory.js';
import { runPolicyConformance } from '../../packages/shadowkv/src/testing/index.js';

// ---- the example plugin (examples/custom-policy/LandmarkWindowCache.ts) under the mutant's name ----

class LandmarkWindowCache extends Example {
  constructor(config: CacheConfig & LandmarkWindowOptions, runtime: Runtime | undefined, name: string) {
    super(config, runtime);
    // NOTE: each control and mutant is registered under a name of its own (snapshots record it, and
    // loadCache rebuilds the policy registered under it).
    (this as { name: string }).name = name;
  }
}

// ---- the same plugin with its decode attention written out (as an author who overrides attendDecode would) ----

/** A row of the written-out plugin: what it picked this step, and (Periodic) what it reuses. */
interface Row extends ChunkState { hot?: Int32Array[]; age?: number }

class WrittenOut extends LandmarkWindowCache {
  /** Per row, the chunks this step picked, kept until afterStep (a later row's step may throw). */
  protected readonly pending = new Map<ChunkState, Int32Array[]>();

  protected override attendDecode(layer: number, seq: number, q: View, out: View): Attended {
    const st = this.states[layer]![seq]! as Row;
    const { queryHeads: Hq, kvHeads: Hkv, scale } = this.spec;
    const { chunkSize: C, budget, recentTokens } = this.options;
    const [g, w, k] = [this.group, this.summaryWidth, budget / C];
    const n = Math.min(st.chunks, Math.floor(Math.max(0, st.tail.count - recentTokens) / C));
    const read: Attended = { tokens: 0, selected: 0 };
    const picked: Int32Array[] = [];
    this.pending.set(st, picked);
    if (n <= k) {
      for (let h = 0; h < Hkv; h++) read.tokens += attendRows(this.device, st.tail, h, g, scale, this.denseRuns(st), q, out);
      return this.counted(read, st, seq);
    }
    const qs = this.device.scratch('mutant.queries', Hq * w, 'f32');
    const scores = this.device.scratch('mutant.scores', n, 'f32');
    this.scoringQueries(q, at(qs));
    for (let h = 0; h < Hkv; h++) {
      this.device.scoreChunks(at(qs, h * g * w), g, w, this.scoreScale(seq), at(st.summaries!, h * st.capacity * w), n, at(scores));
      const ids = this.choose(st, h, at(scores), n, k);
      picked.push(ids);
      read.tokens += attendRows(this.device, st.tail, h, g, scale, this.sparseRuns(ids, n, st), q, out);
      read.selected! += ids.length * C;
    }
    this.sparseDone(out, seq);
    return this.counted(read, st, seq);
  }
  protected denseRuns(st: ChunkState): [number, number][] {
    return [[0, st.tail.count]];
  }
  protected sparseRuns(ids: Int32Array, n: number, st: ChunkState): [number, number][] {
    const C = this.options.chunkSize;
    return [...rowRuns(ids, C), [n * C, st.tail.count - n * C]];
  }
  protected scoreScale(_seq: number): number {
    return this.spec.scale;
  }
  protected choose(_st: Row, _h: number, scores: View, n: number, k: number): Int32Array {
    return this.device.selectChunks(scores, n, k, true).sort();
  }
  protected sparseDone(_out: View, _seq: number): void {}
  protected counted(read: Attended, _st: ChunkState, _seq: number): Attended {
    return read;
  }
  // NOTE: ChunkScoringCache declares these without the arguments it does not read.
  protected override beforeStep(layer?: number, seqs?: readonly number[]): void {
    void [layer, seqs];
    super.beforeStep();
    this.pending.clear();
  }
  protected override afterStep(layer: number, seq: number): void {
    const st = this.states[layer]![seq]!;
    super.afterStep(layer, seq);
    st.selected = this.pending.get(st) ?? [];
    this.pending.delete(st);
  }
}

/**
 * A plugin with state of its own: it rescores every third step of a row and attends the chunks it
 * picked last time in between (`hot`, `age`), saving both in snapshots and dropping both at reset.
 */
class Periodic extends WrittenOut {
  protected override choose(st: Row, h: number, scores: View, n: number, k: number): Int32Array {
    const reuse = st.age! % 3 !== 0 && st.hot?.[h];
    return reuse ? reuse : super.choose(st, h, scores, n, k);
  }
  protected override beforeStep(layer?: number, seqs?: readonly number[]): void {
    super.beforeStep(layer, seqs);
    for (const s of seqs!) (this.states[layer!]![s]! as Row).age = ((this.states[layer!]![s]! as Row).age ?? 0) + 1;
  }
  protected override afterStep(layer: number, seq: number): void {
    super.afterStep(layer, seq);
    const st = this.states[layer]![seq]! as Row;
    if (st.selected.length) st.hot = st.selected;
  }
  protected override afterCrop(st: Row): void {
    super.afterCrop(st);
    st.hot = st.hot?.map((ids) => ids.filter((c) => c < st.chunks));
  }
  protected override clearState(st: Row): void {
    super.clearState(st);
    Object.assign(st, { hot: undefined, age: 0 });
  }
  protected override saveState(st: Row): Record<string, unknown> {
    return { ...super.saveState(st), age: st.age ?? 0, ...(st.hot ? { hot: st.hot } : {}) };
  }
  protected override savedStateKeys(): string[] {
    return [...super.savedStateKeys(), 'age', 'hot'];
  }
  protected override loadState(st: Row, saved: Record<string, unknown>): void {
    super.loadState(st, saved);
    st.age = (saved.age as number | undefined) ?? 0;
    st.hot = (saved.hot as Int32Array[] | undefined)?.map((a) => Int32Array.from(a));
  }
}

/**
 * Periodic that picks in afterStep, with the step's query, the chunks its next reuse steps attend (a
 * selection made off the decode path). The query is copied: attendDecode's q is valid only during the call.
 */
class Prefetch extends Periodic {
  protected readonly queries = new Map<ChunkState, View>();
  protected keep(q: View, seq: number): View {
    const n = this.spec.queryHeads * this.spec.headDim;
    const copy = at(this.device.scratch(`prefetch.q.${seq}`, n, 'f32'));
    this.device.copy(copy, q, n);
    return copy;
  }
  protected override attendDecode(layer: number, seq: number, q: View, out: View): Attended {
    this.queries.set(this.states[layer]![seq]!, this.keep(q, seq));
    return super.attendDecode(layer, seq, q, out);
  }
  protected override afterStep(layer: number, seq: number): void {
    super.afterStep(layer, seq);
    const st = this.states[layer]![seq]! as Row;
    const q = this.queries.get(st);
    this.queries.delete(st);
    if (!q || !st.hot) return;
    const { chunkSize: C, budget, recentTokens } = this.options;
    const [g, w] = [this.group, this.summaryWidth];
    const n = Math.min(st.chunks, Math.floor(Math.max(0, st.tail.count - recentTokens) / C));
    const qs = this.device.scratch('mutant.queries', this.spec.queryHeads * w, 'f32');
    const scores = this.device.scratch('mutant.scores', n, 'f32');
    this.scoringQueries(q, at(qs));
    st.hot = st.hot.map((_, h) => {
      this.device.scoreChunks(at(qs, h * g * w), g, w, this.spec.scale, at(st.summaries!, h * st.capacity * w), n, at(scores));
      return this.device.selectChunks(at(scores), n, budget / C, true).sort();
    });
  }
}

// ---- the mutants: one author mistake each, and what the kit's failure must say ----

type Ctor = new (config: CacheConfig & LandmarkWindowOptions, runtime: Runtime | undefined, name: string) => LandmarkWindowCache;
interface Mutant { id: string; mistake: string; make: Ctor; says: RegExp }

const MUTANTS: Mutant[] = [
  {
    id: 'skips-first-chunk', mistake: 'attends from the second chunk on (off by one chunk)',
    make: class extends WrittenOut { protected override denseRuns(st: ChunkState): [number, number][] { return [[this.options.chunkSize, st.tail.count - this.options.chunkSize]]; } },
    says: /wide: .*decode \d+ layer \d+/,
  },
  {
    id: 'forgets-newest', mistake: 'attends every token but the one just appended',
    make: class extends WrittenOut { protected override denseRuns(st: ChunkState): [number, number][] { return [[0, st.tail.count - 1]]; } },
    says: /wide: .*decode \d+ layer \d+/,
  },
  {
    id: 'forgets-newest-when-sparse', mistake: 'a sparse step leaves out the token just appended',
    make: class extends WrittenOut {
      protected override sparseRuns(ids: Int32Array, n: number, st: ChunkState): [number, number][] {
        return super.sparseRuns(ids, n, st).map(([a, m], i, all) => [a, i === all.length - 1 ? m - 1 : m]);
      }
    },
    says: /own token|token .*appended|newest/i,
  },
  {
    id: 'reads-past-tail', mistake: 'attends one row past the tokens held (a cropped or evicted row)',
    make: class extends WrittenOut {
      protected override sparseRuns(ids: Int32Array, n: number, st: ChunkState): [number, number][] {
        return super.sparseRuns(ids, n, st).map(([a, m], i, all) => [a, i === all.length - 1 ? m + 1 : m]);
      }
    },
    says: /attendRows\(\): run \[\d+, \d+\] is not within the \d+ rows held/,
  },
  {
    id: 'nan-one-head', mistake: 'leaves NaN in query head 3 of every output',
    make: class extends WrittenOut {
      protected override attendDecode(layer: number, seq: number, q: View, out: View): Attended {
        const read = super.attendDecode(layer, seq, q, out);
        const d = this.spec.headDim;
        this.device.write(at(out.buf, out.offset + 3 * d), new Float32Array(d).fill(NaN));
        return read;
      }
    },
    says: /wide: .*decode \d+ layer \d+: expected NaN/,
  },
  {
    id: 'nan-one-head-when-sparse', mistake: 'a sparse step leaves NaN in query head 3',
    make: class extends WrittenOut {
      protected override sparseDone(out: View): void {
        const d = this.spec.headDim;
        this.device.write(at(out.buf, out.offset + 3 * d), new Float32Array(d).fill(NaN));
      }
    },
    says: /finite|NaN/i,
  },
  {
    id: 'row-1-scaled', mistake: 'scores batch row 1 with another scale than row 0',
    make: class extends WrittenOut { protected override scoreScale(seq: number): number { return seq === 1 ? 4 * this.spec.scale : this.spec.scale; } },
    says: /rows are computed alone.*step \d+ \(rows 0, 1\) layer \d+ row 1/,
  },
  {
    id: 'random-ties', mistake: 'breaks near-ties between chunk scores with Math.random',
    make: class extends WrittenOut {
      protected override choose(st: Row, h: number, scores: View, n: number, k: number): Int32Array {
        const s = Float32Array.from(this.device.read(scores as View & { buf: { dtype: 'f32' } }, n), (x) => x + 0.02 * Math.random());
        this.device.write(scores, s);
        return super.choose(st, h, scores, n, k);
      }
    },
    says: /step \d+ layer \d+/,
  },
  {
    id: 'keeps-temporary-query', mistake: "picks the next step's chunks in afterStep with the step's q, kept from attendDecode (a buffer valid only during that call)",
    make: class extends Prefetch { protected override keep(q: View): View { return q; } },
    says: /rows are computed alone.*row 0/,
  },
  {
    id: 'counts-negative', mistake: 'attendDecode reports a negative token count',
    make: class extends WrittenOut { protected override counted(read: Attended): Attended { return { ...read, tokens: -read.tokens }; } },
    says: /attendDecode returned tokens -\d+; counts are non-negative integers/,
  },
  {
    id: 'counts-fraction', mistake: 'attendDecode reports tokens per query head (a fraction)',
    make: class extends WrittenOut { protected override counted(read: Attended): Attended { return { ...read, tokens: read.tokens / 3 }; } },
    says: /attendDecode returned tokens [\d.]+; counts are non-negative integers/,
  },
  {
    id: 'counts-too-many', mistake: 'attendDecode counts each token once per query head (more tokens than the row holds)',
    make: class extends WrittenOut { protected override counted(read: Attended): Attended { return { ...read, tokens: read.tokens * this.group }; } },
    says: /attended|lastAttendedTokens/i,
  },
  {
    id: 'selected-more-than-attended', mistake: 'reports more selected tokens than it attended',
    make: class extends WrittenOut { protected override counted(read: Attended): Attended { return { ...read, selected: read.tokens + 1 }; } },
    says: /selected/i,
  },
  {
    id: 'counter-fraction', mistake: "its own counter (stats().policy) is a running mean, not a count",
    make: class extends WrittenOut {
      private calls = 0;
      private meanTokens = 0;
      protected override counted(read: Attended): Attended {
        this.meanTokens = (this.meanTokens * this.calls + read.tokens) / (this.calls + 1);
        this.calls += 1;
        return read;
      }
      protected override saveCounters(): Record<string, number> { return { meanTokens: this.meanTokens }; }
      protected override loadCounters(c: Record<string, number>): void { this.meanTokens = c.meanTokens ?? 0; }
    },
    says: /meanTokens/,
  },
  {
    id: 'loadState-skips-super', mistake: "loadState overridden without calling super (summaries not rebuilt)",
    make: class extends LandmarkWindowCache { protected override loadState(): void {} },
    says: /save → loadCache continues exactly/,
  },
  {
    id: 'hot-not-saved', mistake: "saveState leaves out the chunks it reuses (Periodic's hot)",
    make: class extends Periodic { protected override saveState(st: Row): Record<string, unknown> { const { hot: _, ...rest } = super.saveState(st); return rest; } },
    says: /save → loadCache/,
  },
  {
    id: 'hot-not-restored', mistake: 'loadState does not restore the chunks it reuses',
    make: class extends Periodic { protected override loadState(st: Row, saved: Record<string, unknown>): void { super.loadState(st, saved); st.hot = undefined; } },
    says: /save → loadCache/,
  },
  {
    id: 'afterCrop-noop', mistake: 'afterCrop overridden to do nothing (summaries of cut chunks survive)',
    make: class extends LandmarkWindowCache { protected override afterCrop(): void {} },
    says: /after crop\(\)/,
  },
  {
    id: 'clearState-leaks', mistake: 'clearState forgets the summaries without freeing them',
    make: class extends LandmarkWindowCache {
      protected override clearState(st: ChunkState): void { Object.assign(st, { summaries: undefined, capacity: 0, chunks: 0, selected: [] }); }
    },
    says: /chunkSummaries|reset\(\) returns/,
  },
  {
    id: 'clearState-keeps-age', mistake: "clearState leaves the row's step parity behind (Periodic's age)",
    make: class extends Periodic { protected override clearState(st: Row): void { const age = st.age; super.clearState(st); st.age = age; } },
    says: /reset gives a fresh row|rows are computed alone/,
  },
  {
    id: 'ignores-sequences', mistake: "advances every row's step parity, not only the rows the step names (Periodic's age)",
    make: class extends Periodic {
      protected override beforeStep(layer?: number, seqs?: readonly number[]): void {
        void seqs; // NOTE (the mistake): every row of the layer, named or not
        super.beforeStep(layer, this.states[layer!]!.map((_, s) => s));
      }
    },
    says: /rows are computed alone.*step \d+ \(rows 0, 1\) layer \d+ row 0/,
  },
  {
    id: 'memoryNeed-10x-low', mistake: 'memoryNeed underestimates by 10x (the creation preflight lets too large a cache through)',
    make: class extends LandmarkWindowCache {
      protected override memoryNeed(config: CacheConfig, batch: number, tokens: number): MemoryEstimate {
        const e = super.memoryNeed(config, batch, tokens);
        return { ...e, device: e.device / 10, host: e.host / 10, transient: e.transient / 10 };
      }
    },
    says: /memoryNeed/,
  },
];

const CONTROLS: { id: string; make: Ctor }[] = [
  { id: 'control-example', make: LandmarkWindowCache },
  { id: 'control-written-out', make: WrittenOut },
  { id: 'control-periodic', make: Periodic },
  { id: 'control-prefetch', make: Prefetch },
];

const WIDE = { budget: 1024 };
const TIGHT = { budget: 32, chunkSize: 8, recentTokens: 16 };

// ---- the kit, run as a plugin author runs it (the forked run) ----

if (process.env.SKV_KIT_MUTANTS === '1') {
  const only = process.env.SKV_KIT_MUTANT?.split(',');
  for (const { id, make } of [...CONTROLS, ...MUTANTS].filter((m) => !only || only.includes(m.id))) {
    const name = `mutant-${id}`;
    registerPolicy(name, (config, runtime) => new make(config as CacheConfig & LandmarkWindowOptions, runtime, name));
    runPolicyConformance({ name, wide: WIDE, tight: TIGHT });
  }
} else {
  // ---- the checks: each control passes, each mutant fails with a message about its mistake ----
  interface Result { fullName: string; status: string; failureMessages: string[] }
  const results = new Map<string, Result[]>();
  const file = fileURLToPath(import.meta.url);
  const root = fileURLToPath(new URL('../..', import.meta.url));

  beforeAll(() => {
    const dir = mkdtempSync(join(tmpdir(), 'skv-kit-mutants-'));
    try {
      const report = join(dir, 'report.json');
      const run = spawnSync(process.execPath, [join(root, 'node_modules/vitest/vitest.mjs'), 'run', file, '--reporter=json', `--outputFile=${report}`], {
        cwd: root, env: { ...process.env, SKV_KIT_MUTANTS: '1' }, encoding: 'utf8', maxBuffer: 64 * 2 ** 20,
      });
      let json: { testResults: { assertionResults: Result[] }[] };
      try {
        json = JSON.parse(readFileSync(report, 'utf8'));
      } catch {
        throw new Error(`the forked kit run left no report (exit ${run.status}):\n${run.stderr.slice(-4000)}`);
      }
      for (const r of json.testResults.flatMap((f) => f.assertionResults)) {
        const id = /^mutant-(\S+?):/.exec(r.fullName)?.[1];
        if (id) results.set(id, [...(results.get(id) ?? []), r]);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);

  describe('the kit passes the unmutated plugin', () => {
    it.each(CONTROLS.map((c) => c.id))('%s', (id) => {
      const runs = results.get(id) ?? [];
      expect(runs.length, `${id}: the kit ran no test`).toBeGreaterThan(0);
      expect(runs.filter((r) => r.status === 'failed').map((r) => `${r.fullName}: ${r.failureMessages[0]?.split('\n')[0]}`)).toEqual([]);
    });
  });

  describe('the kit fails each mutant, saying why', () => {
    it.each(MUTANTS.map((m) => [m.id, m.mistake, m.says] as const))('%s (%s)', (id, _, says) => {
      const failed = (results.get(id) ?? []).filter((r) => r.status === 'failed');
      const said = failed.map((r) => `${r.fullName} → ${r.failureMessages.join('\n').split('\n').slice(0, 3).join(' ')}`);
      expect(failed.length, `the kit passed mutant ${id}`).toBeGreaterThan(0);
      expect(said.some((s) => says.test(s)), `no failure of ${id} says ${says}:\n${said.join('\n')}`).toBe(true);
    });
  });
}
