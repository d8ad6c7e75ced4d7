// examples/progress.ts off a terminal (a log, CI): the last line, and one every few seconds of a long
// loop, not a line a tick (the demo's logs had 16 lines a decode of 0.3 s).
import { afterEach, expect, it, vi } from 'vitest';
import { Progress } from '../../examples/progress.js';

const log = () => {
  const lines: string[] = [];
  return { lines, out: { isTTY: false, write: (s: string) => lines.push(s) } as unknown as NodeJS.WriteStream };
};

afterEach(() => vi.useRealTimers());

it('a quick loop logs its last line only', () => {
  const { lines, out } = log();
  const bar = new Progress('decode', 16, out);
  for (let i = 0; i < 16; i++) bar.tick();
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^decode \[#{28}\] 16\/16 /);
});

it('a long loop logs a line every 5 s and its last', () => {
  vi.useFakeTimers();
  const { lines, out } = log();
  const bar = new Progress('prefill', 10, out);
  for (let i = 0; i < 10; i++) {
    vi.advanceTimersByTime(2000); // 20 s in all: lines at 6, 12 and 18 s, then the last
    bar.tick();
  }
  expect(lines.map((l) => l.split(' ')[2])).toEqual(['3/10', '6/10', '9/10', '10/10']);
});
