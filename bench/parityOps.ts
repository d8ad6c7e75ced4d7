// The op cases of bench/parity.ts: each generates its inputs once, and `run` uploads them to a
// device, calls the op and reads every output back, so two backends see the same bits.
import { at, fromNumbers, ropeFrequencies, type Device, type DType, type Segment } from '../packages/shadowkv/src/backend.js';
import { get, put, rounded, zerosOn } from '../test/helpers/device.js';
import { lowRankKeys, randn, rng } from '../test/helpers/data.js';

/** Named outputs of one op call, as float64 (indices too). */
export type Outputs = Record<string, Float64Array>;

export interface OpCase {
  op: string;
  name: string;
  /** Both backends must give the same bits (same rounding; NOTE: ties go to the lower index). */
  exact?: boolean;
  /** Outputs compared element by element (default: all); the rest only feed `compare`. */
  elementwise?: string[];
  run(device: Device): Outputs;
  /** What an element-wise comparison cannot say (a factorization is unique only up to signs). */
  compare?(ref: Outputs, cand: Outputs): Record<string, unknown>;
}

const LLAMA3_ROPE = { theta: 500000, scaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 } };
const f64 = (x: ArrayLike<number>) => Float64Array.from(x);
/** n distinct ints of [0, max), shuffled. */
const distinct = (n: number, max: number, rand: () => number) => {
  const all = Int32Array.from({ length: max }, (_, i) => i);
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(rand() * (max - i));
    [all[i], all[j]] = [all[j]!, all[i]!];
  }
  return all.slice(0, n);
};

// Zero and signs, overflow and rounding ties of the 16-bit types, their subnormals, non-finite values.
const EDGES = [0, -0, 1, -1, 1 / 3, 65504, 65519, 65520, 1e-5, 6e-8, 3e-8, 1e-40, 3.14159, -2.5e10, 1.00390625, 1.01171875, 3.4e38, Infinity, -Infinity, NaN];

function convert(dtype: DType, n: number): OpCase {
  const rand = rng(n);
  // Every exponent from 2^-40 to 2^40, both signs.
  const x = Float64Array.from({ length: n }, (_, i) => (i < EDGES.length ? EDGES[i]! : Math.fround((rand() - 0.5) * 2 ** Math.floor(rand() * 80 - 40))));
  return {
    op: 'convert', name: `f32 -> ${dtype} -> f32, ${n} values`, exact: true,
    run: (dev) => {
      const mid = dev.alloc(n, dtype, 'parity');
      const back = dev.alloc(n, 'f32', 'parity');
      dev.convert(at(mid), at(put(dev, x, 'f32')), n);
      dev.convert(at(back), at(mid), n);
      return { narrowed: get(dev, mid), widened: get(dev, back) };
    },
  };
}

function convertRows(dtype: DType, rows: number, cols: number): OpCase {
  const src = rounded(randn(rows * (cols + 2) + 1, rng(rows)), dtype);
  return {
    op: 'convert', name: `convertRows ${dtype} -> f32, ${rows} x ${cols}, strides ${cols + 2} -> ${cols + 4}`, exact: true,
    run: (dev) => {
      const dst = put(dev, new Float64Array(rows * (cols + 4)).fill(-7), 'f32');
      dev.convertRows(at(dst, 3), cols + 4, at(put(dev, src, dtype), 1), cols + 2, rows, cols);
      return { dst: get(dev, dst) };
    },
  };
}

function gemm(dtype: DType, M: number, N: number, K: number, v: { transA?: boolean; transB?: boolean; gather?: boolean; alpha?: number; beta?: number }): OpCase {
  const rand = rng(M + N + K + (v.transA ? 1 : 0) + (v.transB ? 2 : 0) + (v.gather ? 4 : 0));
  const aRowCount = v.transA ? K : v.gather ? 3 * M : M;
  const lda = v.transA ? M + 2 : K + 3; // lda > width: strided rows
  const ldb = v.transB ? K + 1 : N + 1;
  const a = rounded(randn(aRowCount * lda, rand), dtype);
  const b = rounded(randn((v.transB ? N : K) * ldb, rand), dtype);
  const c0 = f64(randn(M * N, rand).map(Math.fround));
  const rows = v.gather ? Int32Array.from({ length: M }, (_, i) => (i * 7919) % aRowCount) : undefined;
  const what = [v.transA && 'transA', v.transB && 'transB', v.gather && 'row gather', v.beta && `alpha ${v.alpha} beta ${v.beta}`].filter(Boolean).join(', ');
  return {
    op: 'gemm', name: `${M}x${N}x${K}${what ? `, ${what}` : ''}`,
    run: (dev) => {
      const c = put(dev, c0, 'f32');
      dev.gemm({
        M, N, K, alpha: v.alpha, beta: v.beta, a: at(put(dev, a, dtype)), lda, transA: v.transA, aRows: rows && at(put(dev, rows, 'i32')),
        b: at(put(dev, b, dtype)), ldb, transB: v.transB, c: at(c), ldc: N,
      });
      return { c: get(dev, c) };
    },
  };
}

function rope(dtype: DType, style: 'half' | 'interleaved'): OpCase {
  const d = 128;
  // Scattered positions up to 2^17, a repeat, then a long consecutive run (block steps and reseeds).
  const positions = Int32Array.from([0, 1, 7, 8, 9, 9, 4095, 8191, 8192, 65535, 131071, 131072, ...Array.from({ length: 2000 }, (_, i) => 129_073 + i)]);
  const x = rounded(randn(positions.length * d, rng(3)), dtype); // rope runs on f32 rows holding storage values
  const inv = ropeFrequencies(d, { ...LLAMA3_ROPE, style });
  return {
    op: 'rope', name: `${style}, Llama-3 scaling, d=${d}, ${positions.length} rows at positions up to 131072`,
    run: (dev) => {
      const buf = put(dev, x, 'f32');
      dev.rope(at(buf), positions.length, d, d, positions, put(dev, inv, 'f64'), style, 1);
      return { x: get(dev, buf) };
    },
  };
}

function ropeInverse(dtype: DType): OpCase {
  const d = 64;
  const x = rounded(randn(17 * 3 * d, rng(5)), dtype);
  const pos = Int32Array.from({ length: 17 }, (_, i) => 1000 + 3 * i);
  return {
    op: 'rope', name: 'direction -1 on 17 rows of stride 3d (d=64)',
    run: (dev) => {
      const buf = put(dev, x, 'f32');
      dev.rope(at(buf, d), 17, d, 3 * d, pos, put(dev, ropeFrequencies(d, { theta: 10000 }), 'f64'), 'half', -1);
      return { x: get(dev, buf) };
    },
  };
}

function preRopeKeys(dtype: DType, heads: number, rows: number, d: number, first: number): OpCase {
  const capacity = rows + 5;
  const keys = rounded(randn(heads * capacity * d, rng(heads * rows + d)), dtype);
  const inv = ropeFrequencies(d, LLAMA3_ROPE);
  return {
    op: 'pre_rope_keys', name: `${heads} heads of ${rows} rows, d=${d}, Llama-3 scaling, from position ${first}`,
    run: (dev) => {
      const out = zerosOn(dev, rows * heads * d, 'f32');
      dev.preRopeKeys(at(out), heads * d, at(put(dev, keys, dtype)), capacity * d, heads, rows, d, put(dev, inv, 'f64'), 'half', first);
      return { keys: get(dev, out) };
    },
  };
}

/** ||U·SV - K|| / ||K|| for U [S x rank], SV [rank x D], K [S x D], a row at a time. */
function reconstructionError(u: Float64Array, sv: Float64Array, k: Float64Array, S: number, rank: number, D: number): number {
  const row = new Float64Array(D);
  let num = 0, den = 0;
  for (let t = 0; t < S; t++) {
    row.fill(0);
    for (let r = 0; r < rank; r++) {
      const c = u[t * rank + r]!;
      for (let j = 0, o = r * D; j < D; j++) row[j] += c * sv[o + j]!;
    }
    for (let j = 0; j < D; j++) {
      num += (row[j]! - k[t * D + j]!) ** 2;
      den += k[t * D + j]! ** 2;
    }
  }
  return Math.sqrt(num / den);
}

function lowRank(dtype: DType, S: number, Hkv: number, d: number, keyRank: number, rank: number, noise: number): OpCase {
  const D = Hkv * d;
  const perHead = lowRankKeys(Hkv, S, d, keyRank, rng(S + rank), noise); // [Hkv, S, d]
  const tokenMajor = new Float64Array(S * D); // [S, Hkv * d]: heads side by side, as compression sees them
  for (let h = 0; h < Hkv; h++) for (let t = 0; t < S; t++) tokenMajor.set(perHead.subarray((h * S + t) * d, (h * S + t + 1) * d), t * D + h * d);
  const K = rounded(tokenMajor, dtype);
  const reconstruction = (o: Outputs) => reconstructionError(o.u!, o.sv!, K, S, rank, D);
  return {
    op: 'low_rank_keys', name: `S=${S} D=${D} rank ${rank} (keys of rank ${keyRank} + noise ${noise}), oversample 16, 2 power iterations`,
    elementwise: ['sigma'],
    run: (dev) => {
      const o = { u: zerosOn(dev, S * rank, 'f32'), sv: zerosOn(dev, rank * D, 'f32'), proj: zerosOn(dev, D * rank, 'f32'), sigma: zerosOn(dev, rank, 'f32') };
      dev.lowRankKeys(at(put(dev, K, 'f32')), S, D, rank, 16, 2, 1234, { u: at(o.u), sv: at(o.sv), proj: at(o.proj), sigma: at(o.sigma) });
      return { u: get(dev, o.u), sv: get(dev, o.sv), sigma: get(dev, o.sigma) };
    },
    // NOTE: U and SV are unique only up to signs and rotations within equal singular values.
    compare: (ref, cand) => ({ reconstruction: { ref: reconstruction(ref), cand: reconstruction(cand) } }),
  };
}

function landmarks(dtype: DType, nChunks: number, C: number, d: number, ld: number, offset: number): OpCase {
  const rand = rng(nChunks * C + d);
  // Keys share a per-channel mean, as real keys do, so that min-cosines are far from 0.
  const mean = randn(ld, rand, 1.5);
  const keys = rounded(randn(nChunks * C * ld + offset, rand).map((x, i) => x + mean[(i - offset + ld) % ld]!), dtype);
  return {
    op: 'landmarks', name: `${nChunks} chunks of ${C}, d=${d}, row stride ${ld}, offset ${offset}`,
    run: (dev) => {
      const lm = zerosOn(dev, nChunks * d, 'f32');
      const minCos = zerosOn(dev, nChunks, 'f32');
      dev.landmarks(at(put(dev, keys, dtype), offset), ld, nChunks, C, d, at(lm), at(minCos));
      return { landmarks: get(dev, lm), minCos: get(dev, minCos) };
    },
  };
}

function keepLandmarks(dtype: DType, heads: number, nChunks: number, d: number, maxOutliers: number): OpCase {
  const rand = rng(heads * nChunks + d);
  // f32 landmarks with the edges of the 16-bit roundings among them.
  const lm = Float64Array.from({ length: heads * nChunks * d }, (_, i) => (i < EDGES.length - 3 ? EDGES[i]! : Math.fround(randn(1, rand)[0]!)));
  const counts = Int32Array.from({ length: heads }, (_, h) => (h === 0 ? 0 : Math.min(maxOutliers, nChunks, 1 + Math.floor(rand() * maxOutliers))));
  const outliers = new Int32Array(heads * maxOutliers);
  counts.forEach((n, h) => outliers.set(distinct(n, nChunks, rand).sort(), h * maxOutliers));
  const capacity = nChunks + 3;
  return {
    op: 'keep_landmarks', name: `${heads} heads of ${nChunks} chunks, d=${d}, up to ${maxOutliers} outliers`, exact: true,
    run: (dev) => {
      const out = zerosOn(dev, heads * capacity * d, dtype);
      const ids = zerosOn(dev, heads * capacity, 'i32');
      dev.keepLandmarks(at(put(dev, lm, 'f32')), heads, nChunks, d, outliers, counts, maxOutliers, at(out), at(ids), capacity);
      return { out: get(dev, out), ids: get(dev, ids) };
    },
  };
}

function scoreChunks(dtype: DType, g: number, d: number, n: number): OpCase {
  const rand = rng(g * n + d);
  const q = f64(randn(g * d, rand, 2).map(Math.fround));
  const lm = rounded(randn(n * d, rand), dtype);
  return {
    op: 'score_chunks', name: `g=${g} d=${d}, ${n} landmarks`,
    run: (dev) => {
      const scores = zerosOn(dev, n, 'f32');
      dev.scoreChunks(at(put(dev, q, 'f32')), g, d, 1 / Math.sqrt(d), at(put(dev, lm, dtype)), n, at(scores));
      return { scores: get(dev, scores) };
    },
  };
}

function selectChunks(n: number, k: number, largest: boolean, levels?: number): OpCase {
  const rand = rng(n + k);
  // With `levels` distinct values, ties straddle the k-th place.
  const scores = f64(Array.from({ length: n }, () => Math.fround(levels ? Math.floor(rand() * levels) / levels : rand())));
  return {
    op: 'select_chunks', name: `${largest ? 'top' : 'bottom'}-${k} of ${n}${levels ? `, ${levels} distinct scores (ties at the cut)` : ''}`, exact: true,
    run: (dev) => ({ selected: f64(dev.selectChunks(at(put(dev, scores, 'f32')), n, k, largest)) }),
  };
}

/** selectChunks over `rows` rows at once (a compression's heads). */
function selectRows(rows: number, n: number, k: number): OpCase {
  const rand = rng(rows * n + k);
  const scores = f64(Array.from({ length: rows * n }, () => Math.fround(Math.floor(rand() * 64) / 64)));
  return {
    op: 'select_chunks', name: `bottom-${k} of each of ${rows} rows of ${n}, 64 distinct scores`, exact: true,
    run: (dev) => ({ selected: f64(dev.selectChunks(at(put(dev, scores, 'f32')), n, k, false, rows)) }),
  };
}

/** score_chunks then select_chunks, each backend on its own scores: only near-ties may differ. */
function scoreThenSelect(dtype: DType, g: number, d: number, n: number, k: number): OpCase {
  const inner = scoreChunks(dtype, g, d, n);
  return {
    op: 'select_chunks', name: `top-${k} of ${n} from each backend's own score_chunks (g=${g} d=${d})`,
    elementwise: ['scores'], // the sets are compared as sets, below
    run: (dev) => {
      const { scores } = inner.run(dev);
      const buf = put(dev, scores!, 'f32');
      return { scores: scores!, selected: f64(dev.selectChunks(at(buf), n, k, true)) };
    },
    compare: (ref, cand) => {
      const a = new Set(ref.selected), b = new Set(cand.selected);
      const onlyRef = [...a].filter((x) => !b.has(x)), onlyCand = [...b].filter((x) => !a.has(x));
      // Distance of each differing chunk's (reference) score from the k-th best, relative to it.
      const kth = Math.min(...[...a].map((x) => ref.scores![x]!));
      const gap = Math.max(0, ...[...onlyRef, ...onlyCand].map((x) => Math.abs(ref.scores![x]! - kth) / kth));
      return { setEqual: onlyRef.length === 0, onlyRef, onlyCand, maxGapFromKth: gap };
    },
  };
}

function rebuildKeys(dtype: DType, o: { S: number; C: number; d: number; Hkv: number; head: number; rank: number; chunks: number; style: 'half' | 'interleaved'; ldo: number }): OpCase {
  const rand = rng(o.S + o.rank);
  const u = rounded(randn(o.S * o.rank, rand), dtype);
  const sv = rounded(randn(o.rank * o.Hkv * o.d, rand, 0.3), dtype);
  const chunkIds = distinct(o.chunks, o.S / o.C, rand);
  const slots = distinct(o.chunks, o.chunks, rand);
  const inv = ropeFrequencies(o.d, { ...LLAMA3_ROPE, style: o.style });
  return {
    op: 'rebuild_keys', name: `${o.chunks} chunks of ${o.C} of ${o.S / o.C}, rank ${o.rank}, d=${o.d}, head ${o.head} of ${o.Hkv}, ${o.style} RoPE, out stride ${o.ldo}`,
    run: (dev) => {
      const out = zerosOn(dev, o.chunks * o.C * o.ldo, dtype);
      dev.rebuildKeys({
        u: at(put(dev, u, dtype)), rank: o.rank, sv: at(put(dev, sv, dtype), o.head * o.d), ldsv: o.Hkv * o.d, d: o.d,
        chunkIds, slots, C: o.C, invFreq: put(dev, inv, 'f64'), style: o.style, out: at(out), ldo: o.ldo,
      });
      return { keys: get(dev, out) };
    },
  };
}

function gatherValues(dtype: DType, heads: number, nChunks: number, block: number, pageChunks: number, h: number, count: number): OpCase {
  const rand = rng(nChunks + block);
  const pages = Math.ceil(nChunks / pageChunks) * heads;
  const data = rounded(randn(pages * pageChunks * block, rand), dtype); // page p * heads + h at p * pageChunks * block
  const chunkIds = distinct(count, nChunks, rand);
  const slots = distinct(count, count + 3, rand);
  return {
    op: 'gather_values', name: `${count} of ${nChunks} chunks of head ${h} of ${heads}, block ${block}, pages of ${pageChunks} chunks`, exact: true,
    run: (dev) => {
      const bufs = Array.from({ length: pages }, (_, p) => {
        const page = dev.alloc(pageChunks * block, dtype, 'parity', 'host');
        dev.write(at(page), fromNumbers(data.subarray(p * pageChunks * block, (p + 1) * pageChunks * block), dtype));
        return page;
      });
      const dst = zerosOn(dev, (count + 3) * block, dtype);
      dev.gatherValues(at(dst), { pageChunks, block, heads, dtype, pages: bufs, table: dev.pointerTable(bufs, 'parity') }, h, chunkIds, slots);
      return { dst: get(dev, dst) };
    },
  };
}

function sparseAttention(dtype: DType, g: number, d: number, sizes: number[], ld: number): OpCase {
  const rand = rng(g + d + sizes.length);
  const q = f64(randn(g * d, rand, 2).map(Math.fround));
  const kv = sizes.map((n) => [rounded(randn(n * ld, rand), dtype), rounded(randn(n * ld, rand), dtype)] as const);
  return {
    op: 'sparse_attention', name: `g=${g} d=${d}, segments ${sizes.join('+')} = ${sizes.reduce((a, b) => a + b)} tokens, row stride ${ld}`,
    run: (dev) => {
      const segments: Segment[] = kv.map(([k, v], i) => ({ k: at(put(dev, k, dtype)), v: at(put(dev, v, dtype)), n: sizes[i]!, ld }));
      const out = zerosOn(dev, g * d, 'f32');
      dev.sparseAttention(at(put(dev, q, 'f32')), g, d, 1 / Math.sqrt(d), segments, at(out));
      return { out: get(dev, out) };
    },
  };
}

function causalAttention(dtype: DType, g: number, Sq: number, d: number, offset: number): OpCase {
  const rand = rng(Sq + offset + d);
  const Sk = Sq + offset;
  const q = f64(randn(g * Sq * d, rand, 2).map(Math.fround));
  const [k, v] = [rounded(randn(Sk * d, rand), dtype), rounded(randn(Sk * d, rand), dtype)];
  return {
    op: 'causal_attention', name: `g=${g} d=${d}, ${Sq} queries after ${offset} tokens`,
    run: (dev) => {
      const out = zerosOn(dev, g * Sq * d, 'f32');
      dev.causalAttention(at(put(dev, q, 'f32')), g, Sq, d, 1 / Math.sqrt(d), offset, at(put(dev, k, dtype)), at(put(dev, v, dtype)), at(out));
      return { out: get(dev, out) };
    },
  };
}

/**
 * Every case for one storage dtype, as thunks so that one case's inputs are alive at a time: odd
 * shapes (tails of every tile), then Llama-3-8B's (g=4, d=128, 8 kv heads, chunks of 8, rank 160).
 * rope and low_rank_keys take f32 buffers; they get values rounded to `dtype`, as a cache feeds them.
 */
export function opCases(dtype: DType): (() => OpCase)[] {
  const llamaRebuild = { S: 16384, C: 8, d: 128, Hkv: 8, head: 5, rank: 160, chunks: 256, style: 'half', ldo: 128 } as const;
  return [
    () => convert(dtype, 100_003),
    () => convertRows(dtype, 257, 129),
    () => gemm(dtype, 17, 23, 19, {}),
    () => gemm(dtype, 513, 257, 129, {}),
    () => gemm(dtype, 513, 257, 129, { transA: true }),
    () => gemm(dtype, 513, 257, 129, { transB: true }),
    () => gemm(dtype, 513, 257, 129, { gather: true }),
    () => gemm(dtype, 513, 257, 129, { alpha: 0.5, beta: 2 }),
    () => gemm(dtype, 2048, 160, 1024, {}), // keys x proj
    () => rope(dtype, 'half'),
    () => rope(dtype, 'interleaved'),
    () => ropeInverse(dtype),
    () => preRopeKeys(dtype, 3, 257, 64, 0),
    () => preRopeKeys(dtype, 8, 4096, 128, 127000),
    () => lowRank(dtype, 301, 2, 32, 6, 16, 0.02),
    () => lowRank(dtype, 4096, 8, 128, 48, 160, 0.05),
    () => landmarks(dtype, 7, 5, 64, 197, 3),
    () => landmarks(dtype, 2048, 8, 128, 1024, 5 * 128),
    () => keepLandmarks(dtype, 3, 41, 64, 5),
    () => keepLandmarks(dtype, 8, 16384, 128, 50),
    () => scoreChunks(dtype, 3, 64, 517),
    () => scoreChunks(dtype, 4, 128, 16384),
    () => selectChunks(1001, 7, true),
    () => selectChunks(257, 300, true),
    () => selectChunks(16384, 256, true, 200),
    () => selectChunks(16384, 48, false, 200),
    () => selectChunks(16384, 2048, true),
    () => selectRows(8, 16384, 48),
    () => scoreThenSelect(dtype, 4, 128, 16384, 256),
    () => rebuildKeys(dtype, { S: 388, C: 4, d: 32, Hkv: 3, head: 2, rank: 40, chunks: 37, style: 'interleaved', ldo: 40 }),
    () => rebuildKeys(dtype, llamaRebuild),
    () => gatherValues(dtype, 3, 40, 4 * 32, 3, 2, 17),
    () => gatherValues(dtype, 8, 1024, 8 * 128, 64, 5, 256),
    () => sparseAttention(dtype, 3, 32, [1, 0, 17], 40),
    () => sparseAttention(dtype, 4, 128, [384, 2048, 33], 128),
    () => causalAttention(dtype, 3, 13, 64, 31),
    () => causalAttention(dtype, 4, 257, 128, 0),
  ];
}
