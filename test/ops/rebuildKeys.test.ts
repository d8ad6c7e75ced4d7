import { expect, it } from 'vitest';
import { at, ropeFrequencies } from '../../packages/shadowkv/src/backend.js';
import { rebuildKeys } from '../oracle/index.js';
import { forEachEnv } from '../envs.js';
import { get, put, rounded, rows, zerosOn } from '../helpers/device.js';
import { randn, relError, rng } from '../helpers/data.js';

forEachEnv('rebuildKeys', (env) => {
  it.each([
    ['half', 8, 64, 2, 24],
    ['interleaved', 4, 32, 3, 40],
    // The CUDA kernel's other layouts: rank over one shared-memory tile (160 at C 8, d 128), a head
    // dim that is not a multiple of 8 (one pair per thread), an odd token count per block (C 33),
    // and more output pairs than threads (C 64, d 128: two passes) with two rank tiles.
    ['half', 8, 128, 1, 200],
    ['interleaved', 3, 20, 0, 12],
    ['half', 33, 16, 1, 8],
    ['interleaved', 64, 128, 2, 200],
  ] as const)('%s RoPE, C=%i d=%i head %i, rank %i: chunks to their slots', (style, C, d, head, rank) => {
    const device = env.instance.createDevice();
    const Hkv = 4;
    const S = 40 * C;
    const rand = rng(d + rank);
    const u = rounded(randn(S * rank, rand), env.dtype);
    const sv = rounded(randn(rank * Hkv * d, rand, 0.3), env.dtype);
    const inv = ropeFrequencies(d, { theta: 10000 });
    const chunkIds = Int32Array.from([39, 0, 17, 5]);
    const slots = Int32Array.from([2, 5, 0, 3]);
    const outRows = 6 * C;
    const out = zerosOn(device, outRows * d, env.dtype);
    device.rebuildKeys({
      u: at(put(device, u, env.dtype)), rank, sv: at(put(device, sv, env.dtype), head * d), ldsv: Hkv * d, d,
      chunkIds, slots, C, invFreq: put(device, inv, 'f64'), style, out: at(out), ldo: d,
    });
    const got = get(device, out);
    const svMatrix = { rows: rank, cols: Hkv * d, data: sv };
    chunkIds.forEach((c, i) => {
      const positions = Array.from({ length: C }, (_, t) => c * C + t);
      const want = rebuildKeys(rows(u, S, rank), svMatrix, head, d, positions, inv, style).flatMap((r) => [...r]);
      expect(relError(got.slice(slots[i]! * C * d, (slots[i]! + 1) * C * d), want)).toBeLessThan(Math.max(env.tolerance, 1e-5));
    });
    // Slots not written stay zero.
    for (const free of [1, 4]) expect(got.slice(free * C * d, (free + 1) * C * d).every((x) => x === 0)).toBe(true);
  });
});
