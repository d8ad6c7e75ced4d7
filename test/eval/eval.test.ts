import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { expect, it } from 'vitest';
import { createCache, listPolicies } from '../../packages/shadowkv/src/index.js';
import { runEval, type EvalReport } from '../../bench/eval/run.js';
import { answer, encodeSample, parseVariant, prefillOnce, replayPrefill } from '../../bench/eval/evaluate.js';
import { RANDOM_CONFIG } from '../../bench/eval/run.js';
import { checkpointFiles, LlamaModel, randomWeights, readCheckpoint } from '../../packages/llama/src/index.js';
import { drawSample, TASK_NAMES } from '../../bench/eval/tasks.js';

it('npm run eval, tiny: every task, length, policy and budget answered; JSON, table and plot written', async () => {
  const out = `${mkdtempSync(`${tmpdir()}/skv-eval-`)}/eval`;
  const sink = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;
  const report = await runEval({ model: 'random', out, lengths: [300, 520], budgets: [0.02, 0.1], tasks: TASK_NAMES, samples: 2, progress: sink });
  const saved = JSON.parse(readFileSync(`${out}.json`, 'utf8')) as EvalReport;
  expect(saved.cells).toEqual(report.cells);
  // Every registered policy ran: full once, the budgeted ones once per budget.
  const budgeted = ['shadowkv', 'streaming', 'quest', 'snapkv'];
  const want = listPolicies().flatMap((p) => (budgeted.includes(p) ? [`${p}@0.02`, `${p}@0.1`] : [`${p}@`]));
  expect(want).toEqual(expect.arrayContaining(['full@', 'shadowkv@0.02', 'streaming@0.1']));
  const labels = new Set(saved.cells.map((c) => `${c.policy}@${c.budget ?? ''}`));
  expect([...labels].sort()).toEqual(want.sort());
  expect(saved.answers).toHaveLength(want.length * 4 * 2 * 2);
  expect(saved.cells.every((c) => c.total === 2 && c.accuracy === c.correct / 2)).toBe(true);
  // The sparse policies really ran sparse: their decode steps attended fewer tokens than the prompt holds.
  const sparse = saved.answers.filter((a) => a.policy === 'shadowkv' || a.policy === 'streaming');
  expect(sparse.every((a) => a.attended > 0 && a.attended < a.length)).toBe(true);
  // Every policy produced an answer (greedy, as many tokens as the expected one).
  expect(saved.answers.every((a) => a.got.length > 0)).toBe(true);
  // Output agreement with full: measured for every policy but full, a cosine; streaming's window misses most of the prompt.
  expect(saved.answers.every((a) => (a.policy === 'full') === (a.agreement === undefined))).toBe(true);
  expect(saved.answers.every((a) => a.agreement === undefined || (a.agreement > -1.0001 && a.agreement < 1.0001))).toBe(true);
  const streaming = saved.answers.filter((a) => a.policy === 'streaming' && a.budget === 0.02);
  expect(streaming.reduce((s, a) => s + a.agreement!, 0) / streaming.length).toBeLessThan(0.99);
  const md = readFileSync(`${out}.md`, 'utf8');
  for (const t of TASK_NAMES) expect(md).toContain(`### ${t}`);
  expect(md).toContain('| streaming @ 2 % |');
  // The attended table: full reads each prompt whole, a 2 % budget far less (means over layers and prompts).
  const attended = md.slice(md.indexOf('### tokens attended per step')).split('\n');
  const rowOf = (name: string) => attended.find((l) => l.startsWith(`| ${name} |`))!.split('|').slice(2, -1).map(Number);
  expect(rowOf('full')).toHaveLength(2);
  expect(rowOf('full')[0]).toBeGreaterThan(250); // the ~300 tokens of each prompt
  expect(rowOf('shadowkv @ 2 %')[0]).toBeLessThan(rowOf('full')[0]! / 2);
  const svg = readFileSync(`${out}.svg`, 'utf8');
  expect(svg.startsWith('<svg')).toBe(true);
  expect(svg.match(/<polyline/g)).toHaveLength(want.length * TASK_NAMES.length);
}, 120_000);

it('an evaluation cut short by --minutes goes on from its .partial.jsonl (--resume) to the answers of one whole run', async () => {
  const dir = mkdtempSync(`${tmpdir()}/skv-eval-resume-`);
  const sink = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;
  const grid = { model: 'random', lengths: [300], budgets: [0.05], tasks: ['passkey', 'kv_lookup'], samples: 2, policies: ['full', 'shadowkv', 'streaming'], progress: sink };
  const whole = await runEval({ ...grid, out: `${dir}/whole` });
  expect(whole.notRun).toEqual([]);
  // No time at all: not one prompt starts, and the report says which were not run.
  const none = await runEval({ ...grid, out: `${dir}/cut`, minutes: 0 });
  expect(none.answers).toEqual([]);
  expect(none.notRun).toEqual(['passkey@300#0', 'passkey@300#1', 'kv_lookup@300#0', 'kv_lookup@300#1']);
  expect(readFileSync(`${dir}/cut.md`, 'utf8')).toContain('Not run');
  // A run killed after one prompt leaves that prompt (and a torn last line, skipped) in the partial file.
  const lines = readFileSync(`${dir}/whole.partial.jsonl`, 'utf8').trim().split('\n');
  expect(lines).toHaveLength(4);
  writeFileSync(`${dir}/killed.partial.jsonl`, `${lines[0]}\n${lines[1]!.slice(0, 40)}`);
  const resumed = await runEval({ ...grid, out: `${dir}/resumed`, resume: `${dir}/killed.partial.jsonl` });
  expect(resumed.notRun).toEqual([]);
  expect(resumed.answers).toEqual(whole.answers);
  expect(Object.values(resumed.timings).reduce((n, t) => n + t.prompts, 0)).toBe(3); // one prompt was taken, three ran
  expect(readFileSync(`${dir}/resumed.partial.jsonl`, 'utf8').trim().split('\n')).toHaveLength(4);
  // Resumed from its own partial file (what scripts/gpu/eval.sh does across calls): the torn line is dropped, not appended to.
  writeFileSync(`${dir}/self.partial.jsonl`, `${lines[0]}\n${lines[1]!.slice(0, 40)}`);
  const again = await runEval({ ...grid, out: `${dir}/self`, resume: `${dir}/self.partial.jsonl` });
  expect(again.answers).toEqual(whole.answers);
  const selfLines = readFileSync(`${dir}/self.partial.jsonl`, 'utf8').trim().split('\n');
  expect(selfLines.map((l) => JSON.parse(l).index)).toHaveLength(4);
}, 120_000);

it('runEval: a resume file that does not exist, an existing partial file it does not resume from, and a length past maxPositions are refused before the partial file is touched', async () => {
  const dir = mkdtempSync(`${tmpdir()}/skv-eval-refused-`);
  const sink = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;
  const progress = '{"task":"passkey","length":300,"index":0,"answers":[]}\n';
  writeFileSync(`${dir}/e.partial.jsonl`, progress);
  const grid = { model: 'random', out: `${dir}/e`, lengths: [300], budgets: [0.05], tasks: ['passkey'], samples: 1, policies: ['full'], progress: sink };
  // NOTE: it used to read a missing file as no prompts and rewrite the run's partial file empty.
  await expect(runEval({ ...grid, resume: `${dir}/typo.partial.jsonl` })).rejects.toThrow(`${dir}/typo.partial.jsonl: no such file`);
  // NOTE: a rerun without --resume used to rewrite it empty, and a --resume of another file with that file's prompts.
  const held = `eval: out ${dir}/e: ${dir}/e.partial.jsonl holds the prompts of an earlier run`;
  await expect(runEval(grid)).rejects.toThrow(new RangeError(`${held}; --resume ${dir}/e.partial.jsonl goes on from them, another --out keeps them, or delete the file to start over`));
  writeFileSync(`${dir}/other.partial.jsonl`, '');
  await expect(runEval({ ...grid, resume: `${dir}/other.partial.jsonl` })).rejects.toThrow(`${held}, and --resume ${dir}/other.partial.jsonl would replace them;`);
  await expect(runEval({ ...grid, resume: `${dir}/e.partial.jsonl`, lengths: [300, 70000] })).rejects.toThrow("lengths 70000 are past the model's maxPositions 65536");
  expect(readFileSync(`${dir}/e.partial.jsonl`, 'utf8')).toBe(progress);
});

it('output agreement: exact attention against itself agrees to 1, and the reference is cropped back to the prompt for the next policy', async () => {
  const files = checkpointFiles(RANDOM_CONFIG, randomWeights(RANDOM_CONFIG, { seed: 2 }));
  using model = await LlamaModel.create(readCheckpoint((name) => files.get(name)), { backend: 'wasm' });
  const { ids } = encodeSample(drawSample('passkey', 300, 0));
  const shared = await prefillOnce(model, ids, { backend: 'wasm', maxTokens: ids.length + 8 });
  const [ref, same] = await Promise.all([0, 1].map(() => createCache({ spec: model.spec, policy: 'full', backend: 'wasm', maxTokens: ids.length + 8 })));
  replayPrefill(ref!, 'full', shared);
  replayPrefill(same!, 'full', shared);
  const { ids: out, agreement } = answer(model, same!, shared.logits, 4, ref!);
  expect(out).toHaveLength(4);
  expect(agreement).toBeCloseTo(1, 6);
  expect(ref!.length(0)).toBe(ids.length);
  expect(same!.length(0)).toBe(ids.length + 3);
  ref!.dispose();
  same!.dispose();
}, 60_000);

it('--variant: a policy with some options changed runs as its own row at every budget; a bad variant is refused by name', async () => {
  const out = `${mkdtempSync(`${tmpdir()}/skv-eval-variant-`)}/eval`;
  const sink = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;
  const report = await runEval({ model: 'random', out, lengths: [400], budgets: [0.03, 0.1], tasks: ['passkey'], samples: 1, policies: ['shadowkv'], variants: ['shadowkv:chunkSize=4:outlierChunks=2'], progress: sink });
  const runs = report.runs[400]!;
  expect(runs.map((r) => `${r.policy}@${r.budget}`)).toEqual(['shadowkv@0.03', 'shadowkv@0.1', 'shadowkv:chunkSize=4:outlierChunks=2@0.03', 'shadowkv:chunkSize=4:outlierChunks=2@0.1']);
  for (const [i, v] of [[0, 2], [1, 3]] as const) {
    // The variant keeps the base's fitted options at the same budget, with its own on top.
    expect(runs[v]!.options).toEqual({ ...runs[i]!.options, chunkSize: 4, outlierChunks: 2 });
    expect(runs[v]!.base).toBe('shadowkv');
  }
  expect(report.answers.filter((a) => a.policy.startsWith('shadowkv:'))).toHaveLength(2);
  expect(readFileSync(`${out}.md`, 'utf8')).toContain('| shadowkv:chunkSize=4:outlierChunks=2 @ 3 % |');
  expect(() => parseVariant('nope:chunkSize=4')).toThrow(/'nope' is not a registered policy/);
  expect(() => parseVariant('shadowkv:chunkSize')).toThrow(/'chunkSize' is not option=number/);
}, 60_000);

it('samples fit their length, hold their answer once asked, and differ by index', () => {
  for (const task of TASK_NAMES) {
    const a = drawSample(task, 2000, 0);
    const b = drawSample(task, 2000, 1);
    expect(1 + Buffer.byteLength(a.prompt) + Buffer.byteLength(a.answer)).toBeLessThanOrEqual(2000);
    expect(1 + Buffer.byteLength(a.prompt) + Buffer.byteLength(a.answer)).toBeGreaterThan(1900);
    expect(a.prompt).toContain(a.answer.trim());
    expect(a.prompt).not.toEqual(b.prompt);
  }
});

it('the Python twin (scripts/gpu/train/tasks.py) draws the same bytes from the same seeds', () => {
  for (const task of TASK_NAMES) {
    const lines = execFileSync('python3', ['scripts/gpu/train/tasks.py', '--dump', task, '777', '3'], { encoding: 'utf8' }).trim().split('\n');
    expect(lines.map((l) => JSON.parse(l))).toEqual([0, 1, 2].map((i) => drawSample(task, 777, i)));
  }
  const train = JSON.parse(execFileSync('python3', ['scripts/gpu/train/tasks.py', '--dump', 'needle_multi', '900', '1', '--split', 'train'], { encoding: 'utf8' }));
  expect(train).toEqual(drawSample('needle_multi', 900, 0, 'train'));
  expect(train.seed).not.toEqual(drawSample('needle_multi', 900, 0).seed);
});
