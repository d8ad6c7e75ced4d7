import { expect, it } from 'vitest';
import { loadCache, type Cache } from '../createCache.js';
import { toFloat32 } from '../dtype.js';
import { CapacityError } from '../errors/CapacityError.js';
import { DisposedError } from '../errors/DisposedError.js';
import { SnapshotError } from '../errors/SnapshotError.js';
import type { TestEnv } from './envs.js';
import { KIT_SPEC, KitInputs } from './inputs.js';
import { makeCache, type PolicyUnderTest } from './subject.js';

const { layers } = KIT_SPEC;

/** A cache whose rows hold every kind of state: a long row decoded past its prompt, a row reset and refilled short. */
async function filled(p: PolicyUnderTest, env: TestEnv, inputs: KitInputs): Promise<Cache> {
  const cache = await makeCache(p, 'tight', env);
  for (let l = 0; l < layers; l++) cache.prefill(l, inputs.prompt(2, 300, true));
  for (let t = 0; t < 4; t++) for (let l = 0; l < layers; l++) cache.decode(l, inputs.step(2));
  cache.reset(1);
  for (let l = 0; l < layers; l++) cache.prefill(l, { ...inputs.prompt(1, 40), sequences: [1] });
  for (let t = 0; t < 30; t++) for (let l = 0; l < layers; l++) cache.decode(l, inputs.step(2));
  return cache;
}

/** `save()` → `loadCache()` restores everything the policy keeps: the copy continues bit for bit like the original. */
export function snapshotSuite(p: PolicyUnderTest, env: TestEnv): void {
  it('save → loadCache continues exactly like the original (a follow-up prefill with queries, then decode)', async () => {
    const original = await filled(p, env, new KitInputs(5));
    const restored = await loadCache(original.save(), { backend: env.backend });
    expect(restored.name).toBe(p.name);
    expect([restored.length(0), restored.length(1)]).toEqual([original.length(0), original.length(1)]);
    expect(restored.stats()).toEqual(original.stats());
    const inputs = new KitInputs(6);
    const same = (a: unknown, b: unknown, label: string) => expect(Array.from(toFloat32(a as never)), label).toEqual(Array.from(toFloat32(b as never)));
    // NOTE: the prefill reads only what each holds: a row that read stale rows past its evictions would differ here.
    for (let l = 0; l < layers; l++) {
      const input = { ...inputs.prompt(1, 20, true), sequences: [0] };
      same(restored.prefill(l, input), original.prefill(l, input), `prefill layer ${l}`);
    }
    for (let t = 0; t < 5; t++) {
      for (let l = 0; l < layers; l++) {
        const input = inputs.step(2);
        same(restored.decode(l, input), original.decode(l, input), `step ${t} layer ${l}`);
      }
    }
    expect(restored.stats()).toEqual(original.stats());
    expect(Buffer.from(restored.save()).equals(Buffer.from(original.save()))).toBe(true);
    [original, restored].forEach((c) => c.dispose());
  });

  it('after crop(), save → loadCache continues exactly like the original (nothing derived from the cropped tokens survives in either)', async () => {
    const original = await makeCache(p, 'tight', env);
    const inputs = new KitInputs(9);
    for (let l = 0; l < layers; l++) original.prefill(l, inputs.prompt(2, 300, true));
    // NOTE: 288 is a multiple of the usual chunk sizes, so the next step's token completes a chunk the
    // crop cut, whose old summary must not be scored; both crops fall below a vote over the prompt. A
    // policy that evicted at prefill holds no prompt token exactly: it crops a decoded one instead.
    const cropTo = (seq: number, length: number) => {
      try {
        original.crop(seq, length);
      } catch (err) {
        if (!(err instanceof CapacityError)) throw err;
        for (let l = 0; l < layers; l++) original.decode(l, inputs.step(1), { sequences: [seq] });
        original.crop(seq, original.length(seq) - 1);
      }
    };
    cropTo(0, 287);
    cropTo(1, 250);
    const restored = await loadCache(original.save(), { backend: env.backend });
    // NOTE: 24 steps: a chunk the crop cut competes only once it leaves the policy's recent window
    // (16 tokens in the example's tight options), and the row cropped to 250 gets there after 22.
    for (let t = 0; t < 24; t++) {
      for (let l = 0; l < layers; l++) {
        const input = inputs.step(2);
        expect(Array.from(toFloat32(restored.decode(l, input) as never)), `step ${t} layer ${l}`).toEqual(Array.from(toFloat32(original.decode(l, input) as never)));
      }
    }
    expect(restored.stats()).toEqual(original.stats());
    [original, restored].forEach((c) => c.dispose());
  });

  it('a truncated or altered snapshot is a SnapshotError', async () => {
    const cache = await filled(p, env, new KitInputs(7));
    const bytes = cache.save();
    cache.dispose();
    await expect(loadCache(bytes.slice(0, bytes.length - 100), { backend: env.backend })).rejects.toThrow(SnapshotError);
    await expect(loadCache(Uint8Array.from(bytes, (x, i) => (i === bytes.length - 500 ? x ^ 0x40 : x)), { backend: env.backend })).rejects.toThrow(SnapshotError);
  });

  it('every call after dispose() is a DisposedError', async () => {
    const cache = await makeCache(p, 'tight', env);
    cache.dispose();
    cache.dispose();
    const inputs = new KitInputs(8);
    for (const call of [() => cache.decode(0, inputs.step(2)), () => cache.prefill(0, inputs.prompt(2, 4)), () => cache.length(), () => cache.memory(), () => cache.stats(), () => cache.save(), () => cache.reset()]) {
      expect(call).toThrow(DisposedError);
    }
  });
}
