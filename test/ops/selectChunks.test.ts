import { expect, it } from 'vitest';
import { at } from '../../packages/shadowkv/src/backend.js';
import { selectChunks } from '../oracle/index.js';
import { forEachEnv } from '../envs.js';
import { put } from '../helpers/device.js';
import { rng } from '../helpers/data.js';

forEachEnv('selectChunks', (env) => {
  it('top-k of random scores equals the reference, ascending', () => {
    const device = env.instance.createDevice();
    const scores = Array.from({ length: 1001 }, rng(11)).map(Math.fround);
    for (const k of [1, 7, 256, 1001, 2000]) {
      const got = device.selectChunks(at(put(device, scores, 'f32')), scores.length, k, true);
      expect(Array.from(got)).toEqual(selectChunks(scores, k));
    }
  });

  // The radix select reads every score in its first passes and only the ones under its prefix once
  // they are few (kernels/select.cuh): here the first pass leaves all 20000 in one bin, and the
  // threshold of the largest k falls inside a run of 5000 ties.
  it('top-k of 20000 scores in one exponent bin, with a run of ties at the threshold', () => {
    const device = env.instance.createDevice();
    const next = rng(5);
    const scores = Array.from({ length: 20000 }, (_, i) => Math.fround(i % 4 === 0 ? 0.75 : 0.5 + 0.5 * next()));
    const buf = put(device, scores, 'f32');
    for (const k of [256, 3000, 9000]) {
      expect(Array.from(device.selectChunks(at(buf), scores.length, k, true))).toEqual(selectChunks(scores, k));
    }
    const smallest = scores.map((x) => -x);
    expect(Array.from(device.selectChunks(at(buf), scores.length, 11000, false))).toEqual(selectChunks(smallest, 11000));
  });

  it('generated scores around the 2048-candidate listing limit: all ties, two values, few distinct', () => {
    const device = env.instance.createDevice();
    for (const n of [2047, 2048, 2049, 4097]) {
      const next = rng(n);
      const kinds: number[][] = [
        Array.from({ length: n }, () => 0.25),
        Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 2 : 1)),
        Array.from({ length: n }, () => Math.fround(Math.floor(next() * 7) / 8)),
      ];
      for (const scores of kinds) {
        const buf = put(device, scores, 'f32');
        for (const k of [1, n >> 1, n - 1]) {
          expect(Array.from(device.selectChunks(at(buf), n, k, true))).toEqual(selectChunks(scores, k));
        }
      }
    }
  });

  it('ties go to the lower index, for largest and smallest', () => {
    const device = env.instance.createDevice();
    const scores = [0.5, 0.9, 0.5, 0.9, 0.1, 0.5, 0.1, 0.9];
    const buf = put(device, scores, 'f32');
    expect(Array.from(device.selectChunks(at(buf), 8, 4, true))).toEqual([0, 1, 3, 7]);
    expect(Array.from(device.selectChunks(at(buf), 8, 3, false))).toEqual([0, 4, 6]);
  });

  it('rows: each row of a [rows x n] block selected as alone, at row x min(k, n) of the result, from any offset', () => {
    const device = env.instance.createDevice();
    const [rows, n] = [5, 777];
    const next = rng(9);
    // Row 2 all ties, row 3 two values, the rest random; a stray score before the block.
    const scores = Array.from({ length: rows * n + 1 }, (_, i) => {
      const r = Math.floor((i - 1) / n);
      return i === 0 ? 99 : r === 2 ? 0.5 : r === 3 ? ((i - 1) % 3 === 0 ? 2 : 1) : Math.fround(next());
    });
    const buf = put(device, scores, 'f32');
    const row = (r: number) => scores.slice(1 + r * n, 1 + (r + 1) * n);
    for (const [k, largest] of [[48, false], [256, true], [n, true], [n + 5, false]] as const) {
      const m = Math.min(k, n);
      const got = device.selectChunks(at(buf, 1), n, k, largest, rows);
      expect(got.length).toBe(rows * m);
      for (let r = 0; r < rows; r++) {
        const want = selectChunks(largest ? row(r) : row(r).map((x) => -x), k);
        expect(Array.from(got.subarray(r * m, (r + 1) * m)), `row ${r}, k ${k}`).toEqual(want);
      }
    }
    expect(device.selectChunks(at(buf, 1), n, 10, true, 0).length).toBe(0);
    for (const bad of [-1, 1.5, NaN]) expect(() => device.selectChunks(at(buf, 1), n, 10, true, bad)).toThrow(/rows must be a non-negative integer/);
  });

  it('k = 0 and n = 0 select nothing', () => {
    const device = env.instance.createDevice();
    const buf = put(device, [1, 2, 3], 'f32');
    expect(device.selectChunks(at(buf), 3, 0, true).length).toBe(0);
    expect(device.selectChunks(at(buf), 0, 5, true).length).toBe(0);
  });
}, (e) => e.dtype === 'f32');
