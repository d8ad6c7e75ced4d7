// The Python twin of drawSample (scripts/gpu/train/tasks.py) refuses what the TS one refuses, with
// the same range in its message, instead of drawing a sample without its pair or filling memory.
import { execFileSync } from 'node:child_process';
import { expect, it } from 'vitest';
import { drawSample, MAX_SAMPLE_LENGTH, minSampleLength, TASK_SPEC } from '../../bench/eval/tasks.js';

const python = (code: string) => execFileSync('python3', ['-c', `import sys, json; sys.path.insert(0, 'scripts/gpu/train'); import tasks\n${code}`], { encoding: 'utf8' });

it('draw_sample refuses the lengths, indices, splits and tasks drawSample refuses, naming the range', () => {
  const cases = [['kv_lookup', 10, 0], ['passkey', minSampleLength('passkey') - 1, 0], ['passkey', 777.5, 0], ['passkey', MAX_SAMPLE_LENGTH + 1, 0], ['passkey', 777, -1], ['passkey', 777, 0, 'test'], ['bogus', 777, 0]] as const;
  const out = python(`
for args in ${JSON.stringify(cases)}:
    try:
        tasks.draw_sample(*args)
        print('drawn')
    except ValueError as e:
        print(e)
print(json.dumps([tasks.min_sample_length(t) for t in tasks.TASK_NAMES]))
print(tasks.MAX_SAMPLE_LENGTH)`).trim().split('\n');
  expect(out.slice(0, cases.length)).toEqual([
    `draw_sample: length must be an integer in [${minSampleLength('kv_lookup')}, ${MAX_SAMPLE_LENGTH}] for kv_lookup (tokens, <bos> and answer included), got 10`,
    `draw_sample: length must be an integer in [${minSampleLength('passkey')}, ${MAX_SAMPLE_LENGTH}] for passkey (tokens, <bos> and answer included), got ${minSampleLength('passkey') - 1}`,
    expect.stringMatching(/length must be an integer in .* got 777.5$/),
    expect.stringMatching(new RegExp(`length must be an integer in .* got ${MAX_SAMPLE_LENGTH + 1}$`)),
    'draw_sample: index must be a non-negative integer, got -1',
    "draw_sample: split must be 'eval' or 'train', got 'test'",
    "draw_sample: unknown task 'bogus'; known: passkey, needle_single, needle_multi, kv_lookup",
  ]);
  for (const [task, length, index, split] of cases) expect(() => drawSample(task, length, index, (split ?? 'eval') as 'eval')).toThrow(/^drawSample: /);
  expect(JSON.parse(out[cases.length]!)).toEqual(Object.keys(TASK_SPEC.tasks).map((t) => minSampleLength(t)));
  expect(Number(out[cases.length + 1])).toBe(MAX_SAMPLE_LENGTH);
});
