// Self-tests of the float64 oracle: each checks a property that a wrong oracle would break.
import { describe, expect, it } from 'vitest';
import {
  applyRope,
  chunkLandmarks,
  frobeniusDistance,
  lowRankKeys,
  matmul,
  OracleFullKV,
  OracleShadowKV,
  ropeFrequencies,
  scoreChunks,
  selectChunks,
  selectOutliers,
  svd,
  transpose,
  zeros,
  type Matrix,
  type OracleShadowKVOptions,
  type OracleSpec,
} from './index.js';

/** Seeded standard normal samples (mulberry32 + Box-Muller), so failures reproduce. */
function normals(seed: number): (n: number) => Float64Array {
  let s = seed >>> 0;
  const uniform = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return (n) => Float64Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform()));
}

function randomMatrix(rows: number, cols: number, seed: number): Matrix {
  return { rows, cols, data: normals(seed)(rows * cols) };
}

function maxAbsDiff(a: Float64Array, b: Float64Array): number {
  expect(a.length).toBe(b.length);
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
}

/** U diag(sigma) Vᵀ. */
function reconstruct(U: Matrix, sigma: Float64Array, V: Matrix): Matrix {
  const us = zeros(U.rows, U.cols);
  for (let i = 0; i < U.rows; i++) for (let j = 0; j < U.cols; j++) us.data[i * U.cols + j] = U.data[i * U.cols + j] * sigma[j];
  return matmul(us, transpose(V));
}

function expectOrthonormalColumns(m: Matrix): void {
  const gram = matmul(transpose(m), m);
  for (let i = 0; i < m.cols; i++) {
    for (let j = 0; j < m.cols; j++) expect(Math.abs(gram.data[i * m.cols + j] - (i === j ? 1 : 0))).toBeLessThan(1e-12);
  }
}

describe('svd (one-sided Jacobi)', () => {
  it.each([
    [23, 17],
    [17, 23],
    [40, 40],
  ])('reconstructs a random %i x %i matrix exactly, with orthonormal U and V and descending sigma', (rows, cols) => {
    const a = randomMatrix(rows, cols, rows * 100 + cols);
    const { U, sigma, V } = svd(a);
    const k = Math.min(rows, cols);
    expect([U.rows, U.cols, V.rows, V.cols, sigma.length]).toEqual([rows, k, cols, k, k]);
    expect(frobeniusDistance(reconstruct(U, sigma, V), a)).toBeLessThan(1e-12);
    expectOrthonormalColumns(U);
    expectOrthonormalColumns(V);
    for (let i = 1; i < k; i++) expect(sigma[i]).toBeLessThanOrEqual(sigma[i - 1]);
    expect(sigma[k - 1]).toBeGreaterThan(0);
  });

  it('finds the rank of a rank-3 matrix', () => {
    const a = matmul(randomMatrix(30, 3, 1), randomMatrix(3, 12, 2));
    const { sigma } = svd(a);
    expect(sigma[2]).toBeGreaterThan(1e-3);
    for (let i = 3; i < sigma.length; i++) expect(sigma[i]).toBeLessThan(1e-12 * sigma[0]);
  });
});

describe('lowRankKeys (truncated SVD)', () => {
  it('leaves an error of sqrt(sum of dropped sigma^2)', () => {
    const K = randomMatrix(50, 16, 7);
    for (const rank of [1, 5, 12]) {
      const { U, SV, sigma, rank: r } = lowRankKeys(K, rank);
      expect(r).toBe(rank);
      const dropped = Math.sqrt(sigma.slice(rank).reduce((s, x) => s + x * x, 0));
      expect(Math.abs(frobeniusDistance(matmul(U, SV), K) - dropped)).toBeLessThan(1e-10 * dropped);
    }
  });

  it("clips the rank to min(rank, nc, Hkv*d) and K·proj gives back U", () => {
    const K = randomMatrix(10, 16, 8);
    const { U, proj, rank } = lowRankKeys(K, 160);
    expect(rank).toBe(10);
    expect(maxAbsDiff(matmul(K, proj).data, U.data)).toBeLessThan(1e-10);
  });

  it('zeroes 1/sigma below 1e-6 sigma_1 in proj', () => {
    const K = matmul(randomMatrix(40, 3, 9), randomMatrix(3, 8, 10)); // rank 3
    const { proj, rank } = lowRankKeys(K, 6);
    expect(rank).toBe(6);
    for (let c = 0; c < 8; c++) {
      for (let i = 0; i < 6; i++) {
        const entry = Math.abs(proj.data[c * 6 + i]);
        if (i < 3) continue;
        expect(entry).toBe(0);
      }
    }
    expect(proj.data.slice(0, 3).some((x) => x !== 0)).toBe(true);
  });
});

describe('rope', () => {
  const invFreq = ropeFrequencies(8, { theta: 10000 });
  const x = normals(3)(5 * 8);

  it('is the identity at position 0 and preserves norms elsewhere', () => {
    expect(maxAbsDiff(applyRope(x.slice(0, 8), [0], invFreq, 'half'), x.slice(0, 8))).toBe(0);
    const y = applyRope(x, [3, 17, 100, 5000, 131071], invFreq, 'interleaved');
    for (let t = 0; t < 5; t++) {
      const n = (v: Float64Array): number => Math.hypot(...v.slice(t * 8, t * 8 + 8));
      expect(Math.abs(n(y) - n(x))).toBeLessThan(1e-12);
    }
  });

  it('is undone by the inverse direction', () => {
    const positions = [1, 2, 77, 4096, 100000];
    for (const style of ['half', 'interleaved'] as const) {
      const back = applyRope(applyRope(x, positions, invFreq, style, 1), positions, invFreq, style, -1);
      expect(maxAbsDiff(back, x)).toBeLessThan(1e-12);
    }
  });

  it('pairs (i, i + d/2) for half and (2i, 2i+1) for interleaved', () => {
    const e0 = Float64Array.from([1, 0, 0, 0, 0, 0, 0, 0]); // rotates with frequency 0 (angle = pos)
    const half = applyRope(e0, [1], invFreq, 'half');
    const inter = applyRope(e0, [1], invFreq, 'interleaved');
    expect(maxAbsDiff(half, Float64Array.from([Math.cos(1), 0, 0, 0, Math.sin(1), 0, 0, 0]))).toBeLessThan(1e-15);
    expect(maxAbsDiff(inter, Float64Array.from([Math.cos(1), Math.sin(1), 0, 0, 0, 0, 0, 0]))).toBeLessThan(1e-15);
    expect(maxAbsDiff(applyRope(x, [1, 2, 3, 4, 5], invFreq, 'half'), applyRope(x, [1, 2, 3, 4, 5], invFreq, 'interleaved'))).toBeGreaterThan(0.1);
  });

  it('matches hand-computed Llama-3 scaling (theta 500000, d 128, factor 8, low 1, high 4, original 8192)', () => {
    const f = ropeFrequencies(128, {
      theta: 500000,
      scaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
    });
    // Wavelength 2π/f: below 8192/4 = 2048 kept, above 8192/1 divided by 8, in between interpolated.
    const raw = (i: number): number => 500000 ** (-(2 * i) / 128);
    expect(f[0]).toBe(1); // wavelength 2π: kept
    expect(f[20]).toBe(raw(20)); // wavelength 379.4: kept
    const smooth30 = (8192 / ((2 * Math.PI) / raw(30)) - 1) / (4 - 1); // wavelength 2948.3: medium band
    expect(f[30]).toBeCloseTo((1 - smooth30) * (raw(30) / 8) + smooth30 * raw(30), 17);
    expect(f[30]).toBeCloseTo(0.0013718935677611381, 15);
    expect(f[34]).toBeCloseTo(0.00017850781276799638, 16); // wavelength 6695.1: medium, near the low end
    expect(f[35]).toBeCloseTo(raw(35) / 8, 18); // wavelength 8218.7: divided
    expect(f[63]).toBeCloseTo(3.068925988914511e-7, 20);
  });
});

describe('selection ops', () => {
  it('selectChunks takes the top k, ties to the lower index, output ascending', () => {
    const scores = [0.5, 0.9, 0.5, 0.9, 0.1, 0.5];
    expect(selectChunks(scores, 1)).toEqual([1]);
    expect(selectChunks(scores, 3)).toEqual([0, 1, 3]);
    expect(selectChunks(scores, 4)).toEqual([0, 1, 2, 3]);
    expect(selectChunks(scores, 10)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(selectChunks(scores, 0)).toEqual([]);
  });

  it('selectOutliers takes the lowest minCos (ties to lower id) plus the sink chunks', () => {
    const minCos = [0.9, 0.2, 0.95, 0.2, 0.1, 0.99];
    expect(selectOutliers(minCos, 2, 0, 4)).toEqual([1, 4]);
    expect(selectOutliers(minCos, 3, 0, 4)).toEqual([1, 3, 4]);
    expect(selectOutliers(minCos, 1, 5, 4)).toEqual([0, 1, 4]); // tokens 0..4 span chunks 0 and 1
    expect(selectOutliers(minCos, 0, 4, 4)).toEqual([0]);
    expect(selectOutliers(minCos, 99, 0, 4)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('scoreChunks is a softmax per query head, then the max over the group', () => {
    const L = [Float64Array.from([1, 0]), Float64Array.from([0, 1]), Float64Array.from([1, 1])];
    const q1 = Float64Array.from([2, 0]);
    const q2 = Float64Array.from([0, 3]);
    const softmax = (z: number[]): number[] => z.map((v) => Math.exp(v) / z.reduce((s, w) => s + Math.exp(w), 0));
    const p1 = softmax([1, 0, 1]); // scale 0.5
    const p2 = softmax([0, 1.5, 1.5]);
    const s = scoreChunks([q1, q2], L, 0.5);
    s.forEach((v, c) => expect(v).toBeCloseTo(Math.max(p1[c], p2[c]), 15));
    expect(scoreChunks([q1], L, 0.5).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 15);
  });

  it('chunkLandmarks is the mean key and the lowest cosine to it', () => {
    const keys = [Float64Array.from([1, 0]), Float64Array.from([0, 1]), Float64Array.from([2, 2]), Float64Array.from([2, 2])];
    const { landmarks, minCos } = chunkLandmarks(keys, 2);
    expect(Array.from(landmarks[0])).toEqual([0.5, 0.5]);
    expect(minCos[0]).toBeCloseTo(Math.SQRT1_2, 15);
    expect(minCos[1]).toBeCloseTo(1, 15);
  });
});

// ---- the stateful caches -------------------------------------------------------------------------------------

const GQA: OracleSpec = { queryHeads: 4, kvHeads: 2, headDim: 8, rope: { theta: 10000, style: 'half' } };
const BASE: OracleShadowKVOptions = {
  rank: 16,
  chunkSize: 4,
  budget: 4096,
  outlierChunks: 2,
  localTokens: 5,
  sinkTokens: 4,
  maxRecentTokens: 6,
  denseThreshold: 20,
};

/** Random pre-RoPE inputs for a cache of `spec`. */
function inputs(spec: OracleSpec, seed: number) {
  const draw = normals(seed);
  const { queryHeads: Hq, kvHeads: Hkv, headDim: d } = spec;
  return {
    prefill: (S: number) => ({ keys: draw(Hkv * S * d), values: draw(Hkv * S * d), queries: draw(Hq * S * d) }),
    decode: (B: number) => ({ query: draw(B * Hq * d), key: draw(B * Hkv * d), value: draw(B * Hkv * d) }),
  };
}

/** Drives a ShadowKV and a full cache with the same inputs; returns the largest output difference seen. */
function compareWithFull(spec: OracleSpec, options: OracleShadowKVOptions, prompts: number[], steps: number, seed: number) {
  const shadow = new OracleShadowKV(spec, options, prompts.length);
  const full = new OracleFullKV(spec, prompts.length);
  const data = inputs(spec, seed);
  let worst = 0;
  prompts.forEach((S, b) => {
    const { keys, values, queries } = data.prefill(S);
    worst = Math.max(worst, maxAbsDiff(shadow.prefill(b, keys, values, S, queries)!, full.prefill(b, keys, values, S, queries)!));
  });
  for (let step = 0; step < steps; step++) {
    const { query, key, value } = data.decode(prompts.length);
    worst = Math.max(worst, maxAbsDiff(shadow.decode(query, key, value), full.decode(query, key, value)));
  }
  return { worst, shadow, full };
}

describe('OracleShadowKV against OracleFullKV', () => {
  it('equals full attention when the budget covers every chunk and the rank is full (rows of different lengths)', () => {
    const { worst, shadow } = compareWithFull(GQA, BASE, [37, 26, 23], 20, 11);
    expect(worst).toBeLessThan(1e-10);
    // The comparison means something only if the rows were compressed and compacted.
    expect(shadow.state(0).compressed).toBeGreaterThan(32);
    expect(shadow.state(1).compressed).toBeGreaterThan(20);
    expect(shadow.state(2).compressed).toBeGreaterThan(0);
    expect(shadow.lastSelection(0, 1).length).toBeGreaterThan(0);
  });

  it('equals full attention for MHA, interleaved RoPE with Llama-3 scaling, and a second prefill into a compressed row', () => {
    const spec: OracleSpec = {
      queryHeads: 3,
      kvHeads: 3,
      headDim: 6,
      scale: 0.3,
      rope: { theta: 500000, style: 'interleaved', scaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 16 } },
    };
    const options = { ...BASE, rank: 18, chunkSize: 3, sinkTokens: 0, outlierChunks: 1 };
    const shadow = new OracleShadowKV(spec, options, 1);
    const full = new OracleFullKV(spec, 1);
    const data = inputs(spec, 12);
    for (const S of [29, 17, 1]) {
      const { keys, values, queries } = data.prefill(S);
      expect(maxAbsDiff(shadow.prefill(0, keys, values, S, queries)!, full.prefill(0, keys, values, S, queries)!)).toBeLessThan(1e-10);
      const { query, key, value } = data.decode(1);
      expect(maxAbsDiff(shadow.decode(query, key, value), full.decode(query, key, value))).toBeLessThan(1e-10);
    }
    // 29 tokens: nc 24; 30 + 17 = 47: 23 > 5 + 6 exact, so 6 chunks of 3 are compacted; 50 at the end.
    expect(shadow.state(0).compressed).toBe(42);
    expect(shadow.length(0)).toBe(full.length(0));
  });

  it('is exactly dense while the length stays below denseThreshold', () => {
    const { worst, shadow } = compareWithFull(GQA, { ...BASE, denseThreshold: 1000, rank: 1, budget: 4 }, [30, 9], 10, 13);
    expect(worst).toBeLessThan(1e-14);
    expect(shadow.state(0).compressed).toBe(0);
    expect(shadow.lastSelection(0, 0)).toEqual([]);
    expect(shadow.lastStepReuse()).toEqual({ hits: 0, misses: 0 });
  });

  it('differs from full attention with a rank-1 basis or a one-chunk budget', () => {
    expect(compareWithFull(GQA, { ...BASE, rank: 1 }, [37], 5, 14).worst).toBeGreaterThan(1e-3);
    expect(compareWithFull(GQA, { ...BASE, budget: 4 }, [37], 5, 14).worst).toBeGreaterThan(1e-3);
  });
});

describe('OracleShadowKV compression rule', () => {
  /** Decodes one token at a time from a `prompt`-token prefill; returns state().compressed after each call. */
  function compressedTrace(options: OracleShadowKVOptions, prompt: number, steps: number): { trace: number[]; cache: OracleShadowKV } {
    const cache = new OracleShadowKV(GQA, options, 1);
    const data = inputs(GQA, 21);
    const { keys, values } = data.prefill(prompt);
    cache.prefill(0, keys, values, prompt);
    const trace = [cache.state(0).compressed];
    for (let i = 0; i < steps; i++) {
      const { query, key, value } = data.decode(1);
      cache.decode(query, key, value);
      trace.push(cache.state(0).compressed);
    }
    return { trace, cache };
  }

  it('compresses first at the step after reaching denseThreshold, then compacts one chunk once the tail exceeds local + maxRecent', () => {
    // C 4, local 5, maxRecent 6, threshold 20. Lengths 19, 20, ..., 33:
    // len 20 is reached by the first step; the second compresses it first: nc = floor(15 / 4) * 4 = 12;
    // compaction after a step when len - nc > 11: len 24 -> 16, 28 -> 20, 32 -> 24.
    const { trace, cache } = compressedTrace(BASE, 19, 14);
    expect(trace).toEqual([0, 0, 12, 12, 12, 16, 16, 16, 16, 20, 20, 20, 20, 24, 24]);
    const s = cache.state(0);
    expect(s.length).toBe(33);
    for (let h = 0; h < 2; h++) {
      // Outliers come from the first compression only (chunks 0-2); compaction appends landmarks 3, 4, 5.
      expect(s.outliers[h]).toContain(0); // sink
      expect(s.outliers[h].every((c) => c < 3)).toBe(true);
      expect(s.landmarkChunks[h].slice(-3)).toEqual([3, 4, 5]);
      expect([...s.outliers[h], ...s.landmarkChunks[h]].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5]);
      expect(s.landmarkChunks[h]).toEqual([...s.landmarkChunks[h]].sort((a, b) => a - b));
    }
  });

  it('compacts several chunks at once when maxRecent spans them', () => {
    // maxRecent 9: compaction when len - nc > 14, m = floor((len - nc - 5) / 4) = 2 chunks.
    const { trace } = compressedTrace({ ...BASE, maxRecentTokens: 9 }, 19, 12);
    expect(trace).toEqual([0, 0, 12, 12, 12, 12, 12, 12, 20, 20, 20, 20, 20]);
  });

  it('waits while floor((len - local) / C) * C is 0', () => {
    // threshold 3 but local 5: steps starting at len 6..8 leave nc 0; the step starting at len 9 gives nc 4.
    const { trace } = compressedTrace({ ...BASE, denseThreshold: 3, outlierChunks: 0, sinkTokens: 0 }, 6, 4);
    expect(trace).toEqual([0, 0, 0, 0, 4]);
  });

  it('a prompt past the threshold is compressed whole at the first decode step, keeping local + remainder exact', () => {
    const cache = new OracleShadowKV(GQA, BASE, 1);
    const data = inputs(GQA, 22);
    const { keys, values } = data.prefill(47);
    cache.prefill(0, keys, values, 47);
    expect(cache.state(0).compressed).toBe(0); // more prompt may follow
    const { query, key, value } = data.decode(1);
    cache.decode(query, key, value);
    expect(cache.state(0).compressed).toBe(40); // floor(42 / 4) * 4, before the step's token
    cache.reset(0);
    expect(cache.state(0)).toEqual({ length: 0, compressed: 0, outliers: [[], []], landmarkChunks: [[], []] });
  });

  it('picks the planted low-minCos chunk and the sink chunks as outliers', () => {
    // Keys point along dims 3 and 7, whose RoPE frequency is ~1e-3: post-RoPE they stay near-parallel,
    // except chunk 5, whose keys alternate in sign (minCos near -1).
    const spec: OracleSpec = { queryHeads: 2, kvHeads: 1, headDim: 8, rope: { theta: 10000 } };
    const noise = normals(23);
    const S = 40;
    const keys = new Float64Array(S * 8);
    for (let t = 0; t < S; t++) {
      const sign = Math.floor(t / 4) === 5 && t % 2 === 1 ? -1 : 1;
      const n = noise(8);
      for (let j = 0; j < 8; j++) keys[t * 8 + j] = sign * ((j === 3 || j === 7 ? 1 : 0) + 0.01 * n[j]);
    }
    const cache = new OracleShadowKV(spec, { ...BASE, outlierChunks: 1, sinkTokens: 5 }, 1);
    cache.prefill(0, keys, noise(S * 8), S);
    cache.decode(noise(2 * 8), noise(8), noise(8));
    const s = cache.state(0);
    expect(s.compressed).toBe(32);
    expect(s.outliers).toEqual([[0, 1, 5]]);
    expect(s.landmarkChunks).toEqual([[2, 3, 4, 6, 7]]);
  });
});

describe('OracleShadowKV selection and reuse', () => {
  it('selects the planted needle chunk under a one-chunk budget', () => {
    const spec: OracleSpec = { queryHeads: 2, kvHeads: 1, headDim: 8, rope: { theta: 10000 } };
    const draw = normals(31);
    const S = 60;
    const keys = draw(S * 8).map((x) => 0.1 * x);
    const needle = 9; // tokens 36..39
    // Pre-RoPE needle keys along dim 3 (frequency ~1e-3), matched by the query after RoPE at nearby positions.
    for (let t = needle * 4; t < needle * 4 + 4; t++) keys[t * 8 + 3] = 3;
    const cache = new OracleShadowKV(spec, { ...BASE, budget: 4, outlierChunks: 0, sinkTokens: 0 }, 1);
    cache.prefill(0, keys, draw(S * 8), S);
    const query = new Float64Array(2 * 8);
    query[3] = 5;
    query[8 + 3] = 5;
    cache.decode(query, draw(8), draw(8));
    expect(cache.lastSelection(0, 0)).toEqual([needle]);
    expect(cache.lastStepReuse()).toEqual({ hits: 0, misses: 1 });
    cache.decode(query, draw(8), draw(8));
    expect(cache.lastStepReuse()).toEqual({ hits: 1, misses: 0 });
  });

  it('counts hits against the previous step of the same sequence and head', () => {
    const cache = new OracleShadowKV(GQA, { ...BASE, maxRecentTokens: 100, budget: 8 }, 2);
    const data = inputs(GQA, 32);
    for (const b of [0, 1]) {
      const { keys, values } = data.prefill(40);
      cache.prefill(b, keys, values, 40);
    }
    let previous = [0, 1].map((b) => [0, 1].map((h) => cache.lastSelection(b, h)));
    expect(previous.flat(2)).toEqual([]); // no decode yet
    for (let step = 0; step < 6; step++) {
      const { query, key, value } = data.decode(2);
      cache.decode(query, key, value);
      const now = [0, 1].map((b) => [0, 1].map((h) => cache.lastSelection(b, h)));
      let hits = 0;
      let misses = 0;
      now.forEach((heads, b) =>
        heads.forEach((sel, h) => {
          expect(sel.length).toBe(2); // budget 8 / C 4
          expect(sel).toEqual([...sel].sort((x, y) => x - y));
          sel.forEach((c) => (previous[b][h].includes(c) ? hits++ : misses++));
        }),
      );
      expect(cache.lastStepReuse()).toEqual({ hits, misses });
      if (step === 0) expect(hits).toBe(0);
      previous = now;
    }
  });
});

describe('usable at test sizes', () => {
  it('600 tokens, Hkv*d = 256, 30 decode steps: matches full attention at full budget and rank', () => {
    const spec: OracleSpec = {
      queryHeads: 4,
      kvHeads: 2,
      headDim: 128,
      rope: { theta: 500000, scaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 } },
    };
    const options: OracleShadowKVOptions = { ...BASE, rank: 256, chunkSize: 8, budget: 1 << 20, localTokens: 32, sinkTokens: 8, outlierChunks: 4, maxRecentTokens: 8 };
    const { worst, shadow } = compareWithFull(spec, options, [600], 30, 41);
    expect(worst).toBeLessThan(1e-9);
    // nc 568 after the prompt, then one chunk per 8 steps once the tail passes 32 + 8: 576, 584, 592.
    expect(shadow.state(0).compressed).toBe(592);
  }, 30_000);
});
