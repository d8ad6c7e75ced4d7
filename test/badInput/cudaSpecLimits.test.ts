import { expect, it } from 'vitest';
import { ConfigError, createCache, toFloat32, type Tensor } from '../../packages/shadowkv/src/backend.js';
import { forEachEnv } from '../envs.js';
import { makeTensor, randn, rng } from '../helpers/data.js';

// A spec within SPEC_LIMITS whose heads need more shared memory a block than the GPU has, in a
// kernel sized by them (the decode step's append holds every q and k head of a token; the decode
// and prefill attention a kv head's query heads of d), is refused by createCache with a ConfigError
// that names the kernel and the limit, before anything is allocated. Every spec it takes must run:
// a prefill with queries (causal attention) and decode steps, their outputs as the wasm runtime's.
// Two families of specs across a limit: at d 512 the attention's tile kernel takes ~4.1 KiB a query
// head of a kv head over 128 KiB of key and value tiles (on an H200, 227 KiB a block: 23 heads fit,
// 24 do not), and at d 256 with 4 query heads a kv head (a register kernel's attention) the append
// takes 4 (5 h + 1) d bytes for h kv heads (44 fit, 48 do not). The smallest of each fits any
// sm_80+ card (163 KiB or more), the largest none.
const families = [
  [2, 8, 16, 23, 24, 32].map((g) => ({ queryHeads: g, kvHeads: 1, headDim: 512 })),
  [16, 32, 44, 48, 64].map((h) => ({ queryHeads: 4 * h, kvHeads: h, headDim: 256 })),
  [{ queryHeads: 1024, kvHeads: 16, headDim: 1024 }],
];

forEachEnv('cuda: a spec past the shared memory of a block', (env) => {
  it('is refused at createCache with a ConfigError naming the kernel and the limit; every spec taken runs as on wasm', async () => {
    const outcomes: string[][] = families.map(() => []);
    for (const [f, shape] of families.flatMap((family, f) => family.map((shape) => [f, shape] as const))) {
      const spec = { layers: 1, ...shape, rope: { theta: 10000 } };
      const make = (backend: string) => createCache({ spec, policy: 'full', batch: 1, dtype: env.dtype, backend });
      const made = await make(env.backend).then((c) => c, (e: unknown) => e as Error);
      if (made instanceof Error) {
        expect(made).toBeInstanceOf(ConfigError);
        expect(made.message).toMatch(/need \d+\.\d KiB of shared memory a block in .+ on CUDA device \d+, which allows \d+\.\d KiB; use backend 'wasm'/);
        outcomes[f]!.push('refused');
        continue;
      }
      const outputs = (cache: typeof made) => {
        const rand = rng(shape.queryHeads + shape.headDim);
        const t = (dims: number[]): Tensor => makeTensor(randn(dims.reduce((a, b) => a * b, 1), rand), dims, env.dtype).t;
        const { queryHeads: Hq, kvHeads: Hkv, headDim: d } = shape;
        const S = 16;
        const out = [Array.from(toFloat32(cache.prefill(0, { keys: t([1, Hkv, S, d]), values: t([1, Hkv, S, d]), queries: t([1, Hq, S, d]) })!))];
        for (let i = 0; i < 2; i++) out.push(Array.from(toFloat32(cache.decode(0, { query: t([1, Hq, 1, d]), key: t([1, Hkv, 1, d]), value: t([1, Hkv, 1, d]) }))));
        cache.dispose();
        return out.flat(); // NOTE: arrays, not spread into Math.max: the prefill's outputs are up to 42M values
      };
      const [got, want] = [outputs(made), outputs(await make('wasm'))];
      const scale = want.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      expect(got.every(Number.isFinite)).toBe(true);
      expect(got.reduce((m, x, i) => Math.max(m, Math.abs(x - want[i]!)), 0)).toBeLessThan(1e-2 * scale);
      outcomes[f]!.push('runs');
    }
    // Each family: taken up to a size, refused past it, on both sides of the limit.
    console.log(`spec-limits ${env.name}: ${JSON.stringify(families.map((family, f) => family.map((s, i) => `${s.queryHeads}/${s.kvHeads}x${s.headDim} ${outcomes[f]![i]}`)))}`);
    for (const o of outcomes.slice(0, 2)) {
      expect(o[0]).toBe('runs');
      expect(o.at(-1)).toBe('refused');
      expect(o.indexOf('refused')).toBe(o.lastIndexOf('runs') + 1);
    }
    expect(outcomes[2]).toEqual(['refused']);
  });
}, (e) => e.name.startsWith('cuda'));
