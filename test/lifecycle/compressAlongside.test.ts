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
  /** Throw at the n-th device call (from 1, frees not counted) between the start and the join. */
  callAt?: number;
}

/** `faults`' device, and the names of the calls it saw between the start and the join of its last factorization. */
function deferred(inner: Device, log: string[], faults: Faults): Device & { between: string[] } {
  let between: string[] | undefined;
  const alongside = (k: View, S: number, D: number, rank: number, oversample: number, powerIters: number, seed: number, out: LowRankOut) => {
    log.push(`start ${k.buf.ptr}`);
    for (const [v, n] of [[out.u, S * rank], [out.sv, rank * D], [out.proj, D * rank]] as const) inner.write(v, new Float32Array(n).fill(NaN));
    const calls: string[] = [];
    between = calls;
    return () => {
      log.push('join');
      between = undefined;
      device.between = calls;
      if (faults.join) throw faults.join;
      inner.lowRankKeys(k, S, D, rank, oversample, powerIters, seed, out);
    };
  };
  const device = new Proxy(inner, {
    get(target, key) {
      if (key === 'lowRankKeysAlongside') return alongside;
      if (key === 'between') return Reflect.get(target, key);
      if (key === 'landmarks' && faults.landmarks) return () => { throw faults.landmarks; };
      if (key === 'free') return (b: Parameters<Device['free']>[0]) => (log.push(`free ${b.ptr}`), target.free(b));
      const v = Reflect.get(target, key, target) as unknown;
      if (typeof v !== 'function') return v;
      return (...a: unknown[]) => {
        if (between) {
          between.push(String(key));
          if (between.length === faults.callAt) throw new OutOfMemoryError(`test: ${String(key)}, call ${between.length} between the start and the join`);
        }
        return (v as (...x: unknown[]) => unknown).apply(target, a);
      };
    },
  }) as Device & { between: string[] };
  return device;
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

  // The class of the cases above: a failure at any device call made while the factorization runs.
  it('a failure at each device call between the start and the join: thrown, joined before the keys are freed, the row compressed later as if never tried', () => {
    const plain = makeCache(env);
    const want = run(plain);
    plain.dispose();
    const probe = deferred(env.instance.createDevice(), [], {});
    const probed = makeCache(env, probe);
    run(probed);
    probed.dispose();
    const window = probe.between;
    expect(window.length).toBeGreaterThan(3);
    window.forEach((name, i) => {
      const log: string[] = [];
      const faults: Faults = { callAt: i + 1 };
      const cache = makeCache(env, deferred(env.instance.createDevice(), log, faults));
      try {
        const got = run(cache, () => {
          expect(() => cache.compress(), `call ${i + 1} (${name})`).toThrow(`${name}, call ${i + 1} between`);
          const started = log.find((e) => e.startsWith('start '))!;
          const [start, join] = [log.indexOf(started), log.indexOf('join')];
          expect(join, `call ${i + 1} (${name})`).toBeGreaterThan(start);
          expect(log.indexOf(`free ${started.slice('start '.length)}`, start), `call ${i + 1} (${name})`).toBeGreaterThan(join);
          expect(cache.stats().compressions).toBe(0);
          delete faults.callAt;
          expect(cache.compress()).toBe(1);
        });
        got.forEach((out, t) => expect(out, `call ${i + 1} (${name}), step ${t}`).toEqual(want[t]));
      } finally {
        cache.dispose();
      }
    });
  });
}, (e) => e.name.startsWith('wasm'));
