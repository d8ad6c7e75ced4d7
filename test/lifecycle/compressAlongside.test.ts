import { expect, it } from 'vitest';
import { ShadowKVCache, type Device, type View } from '../../packages/shadowkv/src/backend.js';
import { OutOfMemoryError } from '../../packages/shadowkv/src/errors/OutOfMemoryError.js';
import type { LowRankOut } from '../../packages/shadowkv/src/backends/Device.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { forEachEnv, type TestEnv } from '../envs.js';

// compress() starts the factorization alongside the landmarks where the device can
// (Device.lowRankKeysAlongside: the CUDA runtime's own thread and stream) and joins it on every
// path. Here the env's device gets a lowRankKeysAlongside that fills the factors with NaN at once
// and computes them only at the join, so that a compression that read them early, or freed their
// inputs before the join, would show it; and a landmarks step or a join that fails on request.
const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48, hostPageChunks: 4 };

interface Faults {
  landmarks?: Error;
  join?: Error;
}

function deferred(inner: Device, log: string[], faults: Faults): Device {
  const alongside = (k: View, S: number, D: number, rank: number, oversample: number, powerIters: number, seed: number, out: LowRankOut) => {
    log.push(`start ${k.buf.ptr}`);
    for (const [v, n] of [[out.u, S * rank], [out.sv, rank * D], [out.proj, D * rank]] as const) inner.write(v, new Float32Array(n).fill(NaN));
    return () => {
      log.push('join');
      if (faults.join) throw faults.join;
      inner.lowRankKeys(k, S, D, rank, oversample, powerIters, seed, out);
    };
  };
  return new Proxy(inner, {
    get(target, key) {
      if (key === 'lowRankKeysAlongside') return alongside;
      if (key === 'landmarks' && faults.landmarks) return () => { throw faults.landmarks; };
      if (key === 'free') return (b: Parameters<Device['free']>[0]) => (log.push(`free ${b.ptr}`), target.free(b));
      const v = Reflect.get(target, key, target) as unknown;
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

function makeCache(env: TestEnv, device?: Device): ShadowKVCache {
  const config = { spec, dtype: env.dtype, batch: 1, ...options };
  return device ? new ShadowKVCache(config, { device, info: { name: 'wasm', description: 'deferred factorization', reason: 'test' } }) : new ShadowKVCache({ ...config, backend: 'wasm' });
}

/** Prefill 300 tokens, compress (where `compress` says), then six decode steps' outputs. */
function run(cache: ShadowKVCache, compress: () => void = () => expect(cache.compress()).toBe(1)): number[][] {
  const w = new NeedleWorkload(spec, { tokens: 300, seed: 5 });
  cache.prefill(0, w.prompt(0));
  compress();
  return Array.from({ length: 6 }, () => Array.from(cache.decode(0, w.step(0)).data as Float32Array));
}

forEachEnv('compress() with the factorization alongside', (env) => {
  it('reads the factors only after the join: the same outputs as lowRankKeys in line, bit for bit', () => {
    const plain = makeCache(env);
    const log: string[] = [];
    const aside = makeCache(env, deferred(env.instance.createDevice(), log, {}));
    try {
      const want = run(plain);
      const got = run(aside);
      expect(log.filter((e) => !e.startsWith('free'))).toEqual([expect.stringMatching(/^start /), 'join']);
      got.forEach((out, i) => {
        expect(out.every(Number.isFinite), `step ${i}`).toBe(true);
        expect(out, `step ${i}`).toEqual(want[i]);
      });
    } finally {
      plain.dispose();
      aside.dispose();
    }
  });

  it.each<[string, Faults]>([
    ['the landmarks fail', { landmarks: new OutOfMemoryError('test: no room for the landmarks') }],
    ['the join fails', { join: new RangeError('lowRankKeys: test: a non-finite key') }],
  ])('%s: the error is thrown, the join came before the keys were freed, and the row compresses later as if never tried', (_, faults) => {
    const plain = makeCache(env);
    const log: string[] = [];
    const live: Faults = { ...faults };
    const aside = makeCache(env, deferred(env.instance.createDevice(), log, live));
    try {
      const want = run(plain);
      const got = run(aside, () => {
        expect(() => aside.compress()).toThrow(faults.landmarks ?? faults.join);
        const started = log.find((e) => e.startsWith('start '))!;
        const keys = `free ${started.slice('start '.length)}`;
        const [start, join] = [log.indexOf(started), log.indexOf('join')];
        expect(join).toBeGreaterThan(start);
        expect(log.indexOf(keys, start)).toBeGreaterThan(join); // its keys freed after the join, not before
        expect(aside.stats().compressions).toBe(0);
        delete live.landmarks;
        delete live.join;
        expect(aside.compress()).toBe(1);
      });
      got.forEach((out, i) => expect(out, `step ${i}`).toEqual(want[i]));
    } finally {
      plain.dispose();
      aside.dispose();
    }
  });
}, (e) => e.name.startsWith('wasm'));
