// The wasm matmul on several threads (ThreadedMatmul, Node workers): the same bits as on one thread,
// whatever the split, and the same errors.
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, DeviceMismatchError, DisposedError, ShapeError, type DType, type Tensor } from '../../packages/shadowkv/src/index.js';
import { FullKVCache } from '../../packages/shadowkv/src/backend.js';
import { LlamaModel, WasmMatmul } from '../../packages/llama/src/index.js';
import { ThreadedMatmul } from '../../packages/llama/src/model/ThreadedMatmul.js';
import { GQA, memoryCheckpoint } from './fixtures.js';
import { tokens } from './reference.js';
import { announceSeed } from '../helpers/adversarial.js';

const SEED = announceSeed('test/llama/threadedMatmul.test.ts');

function weight(N: number, K: number, dtype: DType, seed: number): Tensor {
  // f16 / bf16 patterns around 1 with every mantissa bit used; f32 smooth values.
  const data = dtype === 'f32'
    ? Float32Array.from({ length: N * K }, (_, i) => Math.sin(i * 0.731 + seed))
    : Uint16Array.from({ length: N * K }, (_, i) => ((dtype === 'bf16' ? 0x3f00 : 0x3800) | ((i * 2654435761 + seed) >>> 22)) & 0xffff);
  return { data, shape: [N, K], dtype };
}

describe('ThreadedMatmul', () => {
  const made: { dispose(): void }[] = [];
  afterAll(() => made.forEach((m) => m.dispose()));
  const track = <T extends { dispose(): void }>(m: T) => (made.push(m), m);

  it.each([2, 3])('on %i threads gives the bits of WasmMatmul: prompt-sized and decode-sized products, every dtype, ranges that do not divide evenly', async (threads) => {
    const t = track(await ThreadedMatmul.create({ threads }));
    const w = track(await WasmMatmul.create());
    expect(t.threads).toBe(threads);
    for (const [M, N, K, dtype] of [[512, 1024, 512, 'bf16'], [300, 259, 515, 'f32'], [64, 1000, 300, 'f16'], [1, 512, 512, 'bf16'], [3, 8, 16, 'f32']] as const) {
      const W = weight(N, K, dtype, M);
      const x = Float32Array.from({ length: M * K }, (_, i) => Math.cos(i * 0.37) * (1 + (i % 7)));
      const [a, b] = [new Float32Array(M * N), new Float32Array(M * N)];
      t.linear(x, M, t.prepare(W), a);
      w.linear(x, M, w.prepare(W), b);
      expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer)), `${M} x ${N} x ${K} ${dtype}`).toBe(true);
    }
  });

  it('generated shapes (both sides of the size that wakes the workers), dtypes and thread counts: the bits of WasmMatmul', async () => {
    const byThreads = new Map<number, ThreadedMatmul>();
    const w = track(await WasmMatmul.create());
    for (const n of [2, 3, 4]) byThreads.set(n, track(await ThreadedMatmul.create({ threads: n })));
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 160 }), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 300 }),
        fc.constantFrom<DType>('f32', 'f16', 'bf16'), fc.constantFrom(2, 3, 4), fc.integer({ min: 0, max: 1000 }),
        (M, N, K, dtype, threads, seed) => {
          const t = byThreads.get(threads)!;
          const W = weight(N, K, dtype, seed);
          const x = Float32Array.from({ length: M * K }, (_, i) => Math.sin(i * 0.61 + seed));
          const [a, b] = [new Float32Array(M * N), new Float32Array(M * N)];
          t.linear(x, M, t.prepare(W), a);
          w.linear(x, M, w.prepare(W), b);
          return Buffer.from(a.buffer).equals(Buffer.from(b.buffer));
        },
      ),
      { seed: SEED, numRuns: 40 },
    );
  });

  it('refuses what WasmMatmul refuses, with the same typed errors', async () => {
    const t = track(await ThreadedMatmul.create({ threads: 2 }));
    const other = track(await WasmMatmul.create());
    const W = t.prepare(weight(64, 32, 'f32', 1));
    expect(() => t.prepare({ data: new Float32Array(10), shape: [4, 4], dtype: 'f32' })).toThrow(ShapeError);
    expect(() => t.linear(new Float32Array(10), 1, W, new Float32Array(64))).toThrow(ShapeError);
    expect(() => t.linear(new Float32Array(32), 1, other.prepare(weight(64, 32, 'f32', 1)), new Float32Array(64))).toThrow(DeviceMismatchError);
    await expect(ThreadedMatmul.create({ threads: 0 })).rejects.toThrow(ConfigError);
    t.dispose();
    expect(() => t.linear(new Float32Array(32), 1, W, new Float32Array(64))).toThrow(DisposedError);
    expect(() => t.prepare(weight(64, 32, 'f32', 1))).toThrow(DisposedError);
  });

  it('a worker that has died fails the next product with an error that says so; products small enough for the calling thread still run', async () => {
    const t = track(await ThreadedMatmul.create({ threads: 2 }));
    const [small, large] = [t.prepare(weight(16, 16, 'f32', 1)), t.prepare(weight(512, 512, 'f32', 2))];
    await (t as unknown as { workers: { terminate(): Promise<number> }[] }).workers[0]!.terminate();
    await new Promise((r) => setTimeout(r, 50)); // the exit event
    expect(() => t.linear(new Float32Array(512 * 512), 512, large, new Float32Array(512 * 512))).toThrow(/ThreadedMatmul: .*a worker exited/);
    const out = new Float32Array(16);
    t.linear(new Float32Array(16).fill(1), 1, small, out);
    expect(out.every(Number.isFinite)).toBe(true);
  });

  it('a model on 2 threads gives the logits of a model on 1, prompt and decode', async () => {
    const { checkpoint } = memoryCheckpoint({ ...GQA, hiddenSize: 256, intermediateSize: 512 }, { dtype: 'bf16', seed: 3 });
    const models = [track(await LlamaModel.create(checkpoint, { backend: 'wasm', threads: 1 })), track(await LlamaModel.create(checkpoint, { backend: 'wasm', threads: 2 }))];
    expect(models.map((m) => m.matmul.name)).toEqual([expect.stringMatching(/^wasm-(simd|plain)$/), expect.stringMatching(/^wasm-(simd|plain)-x2$/)]);
    const ids = tokens(200, GQA.vocabSize, 2);
    const logits = models.map((m) => {
      const cache = new FullKVCache({ spec: m.spec, dtype: 'f32' });
      const out = [m.forward(ids.slice(0, 199), cache, { allLogits: true }), m.forward([ids[199]!], cache)];
      cache.dispose();
      return out;
    });
    expect(logits[1]).toEqual(logits[0]);
    await expect(LlamaModel.create(checkpoint, { backend: 'wasm', threads: 1.5 })).rejects.toThrow(ConfigError);
  });
});
