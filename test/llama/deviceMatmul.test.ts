// DeviceMatmul: the projections through a Device's gemm (the GPU on cuda). Every suite runs per test
// env (wasm here; cuda where the addon and a GPU are, else listed as skipped), the env's storage
// dtype being the weights' dtype.
import { describe, expect, it } from 'vitest';
import { DeviceMismatchError, DisposedError, DTypeError, FullKVCache, resolveBackend, ShapeError } from '../../packages/shadowkv/src/backend.js';
import { DeviceMatmul, generate, JsMatmul, LlamaModel, WasmMatmul, type Matmul } from '../../packages/llama/src/index.js';
import { forEachEnv } from '../envs.js';
import { GQA, MHA, memoryCheckpoint } from './fixtures.js';
import { maxRelDiff, referenceLogits, tokens } from './reference.js';


forEachEnv('DeviceMatmul', (env) => {
  const create = () => new DeviceMatmul(env.instance.createDevice(), true);

  it.each([1, 2, 5, 17])('linear matches float64 at M = %i rows (K 300, N 13; weights in the env dtype)', (M) => {
    using matmul = create();
    const [K, N] = [300, 13];
    const x = Float32Array.from({ length: M * K }, (_, i) => Math.sin(i * 0.37));
    const { tensors } = memoryCheckpoint({ ...GQA, hiddenSize: K, intermediateSize: N, layers: 1 }, { dtype: env.dtype });
    const weight = tensors.get('model.layers.0.mlp.up_proj.weight')!; // [N, K]
    const wide = new JsMatmul().prepare(weight).data;
    const out = new Float32Array(M * N + 3).fill(7); // longer than needed: the tail is left alone
    matmul.linear(x, M, matmul.prepare(weight), out);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += x[m * K + k]! * wide[n * K + k]!;
        expect(Math.abs(out[m * N + n]! - s)).toBeLessThan(1e-5 * Math.sqrt(K));
      }
    }
    expect(Array.from(out.subarray(M * N))).toEqual([7, 7, 7]);
  });

  it('forward logits equal the JS and wasm matmuls\' (prompt in 3 chunks, then 5 decode steps, GQA and MHA with biases)', async () => {
    for (const config of [GQA, MHA]) {
      const { tensors, checkpoint } = memoryCheckpoint(config, { dtype: env.dtype, seed: 5 });
      const ids = tokens(24, config.vocabSize, 1);
      const want = referenceLogits(config, tensors, ids);
      const logits: Float32Array[][] = [];
      for (const made of [new JsMatmul(), await WasmMatmul.create(), create()] as Matmul[]) {
        using matmul = made; // ours, not the model's: disposed after it
        using model = await LlamaModel.create(checkpoint, { matmul });
        const cache = new FullKVCache({ spec: model.spec, dtype: 'f32', backend: env.backend });
        const got: Float32Array[] = [];
        for (const [from, to] of [[0, 7], [7, 14], [14, 19]] as const) {
          const all = model.forward(ids.slice(from, to), cache, { allLogits: true });
          for (let t = 0; t < to - from; t++) got.push(all.slice(t * config.vocabSize, (t + 1) * config.vocabSize));
        }
        for (let t = 19; t < 24; t++) got.push(model.forward([ids[t]!], cache));
        logits.push(got);
        cache.dispose();
      }
      const [js, wasm, device] = logits as [Float32Array[], Float32Array[], Float32Array[]];
      for (let t = 0; t < 24; t++) {
        expect(maxRelDiff(device[t]!, want[t]!)).toBeLessThan(1e-4); // the float64 reference, as forward.test.ts
        expect(maxRelDiff(device[t]!, js[t]!)).toBeLessThan(1e-5); // f32 against f32: summation order only
        expect(maxRelDiff(device[t]!, wasm[t]!)).toBeLessThan(1e-5);
      }
    }
  });

  it('greedy tokens are the same as the wasm matmul\'s (40 tokens)', async () => {
    const { checkpoint } = memoryCheckpoint(GQA, { dtype: env.dtype, seed: 9 });
    const runs: number[][] = [];
    for (const made of [await WasmMatmul.create(), create()]) {
      using matmul = made; // ours, not the model's: disposed after it
      using model = await LlamaModel.create(checkpoint, { matmul });
      const cache = new FullKVCache({ spec: model.spec, dtype: 'f32', backend: env.backend });
      const out: number[] = [];
      for await (const t of generate(model, cache, tokens(30, GQA.vocabSize, 2), { maxNewTokens: 40, chunkTokens: 11 })) out.push(t.id);
      runs.push(out);
      cache.dispose();
    }
    expect(runs[0]).toHaveLength(40);
    expect(new Set(runs[0]).size).toBeGreaterThan(1); // not one token repeated: the check has something to compare
    expect(runs[1]).toEqual(runs[0]);
  });

  it('dispose frees the weights and the activation buffers; the device is disposed only when owned', () => {
    const device = env.instance.createDevice();
    const before = device.memory();
    const allocations = device.allocations();
    const matmul = new DeviceMatmul(device);
    expect(matmul.name).toBe(`device-${env.backend}`);
    const { tensors } = memoryCheckpoint(GQA, { dtype: env.dtype });
    const weights = [...tensors.entries()].filter(([name]) => name.endsWith('proj.weight')).map(([, w]) => matmul.prepare(w));
    for (const rows of [1, 9, 3]) {
      const w = weights[rows % weights.length]!;
      matmul.linear(new Float32Array(rows * w.cols), rows, w, new Float32Array(rows * w.rows));
    }
    const held = device.memory();
    expect(held.device).toBeGreaterThan(before.device);
    expect(held.components['matmul.weights']).toBeGreaterThan(0);
    expect(held.components['matmul.x']).toBeGreaterThan(0);
    expect(device.allocations()).toBeGreaterThan(allocations);
    matmul.dispose();
    expect(device.memory().device).toBe(before.device);
    expect(device.memory().components).toEqual(before.components);
    matmul.dispose(); // twice is fine
    // The device was lent: still usable.
    expect(() => device.alloc(4, 'f32', 'after')).not.toThrow();
    device.dispose();
  });

  it('LlamaModel: matmul "device" (and the default when the backend is not wasm) multiplies on the backend\'s device', async () => {
    const { checkpoint } = memoryCheckpoint(GQA, { dtype: env.dtype });
    using chosen = await LlamaModel.create(checkpoint, { matmul: 'device', backend: env.backend });
    expect(chosen.matmul.name).toBe(`device-${env.backend}`);
    using byDefault = await LlamaModel.create(checkpoint, { backend: env.backend });
    expect(byDefault.matmul.name).toMatch(env.backend === 'wasm' ? /^wasm-/ : new RegExp(`^device-${env.backend}$`));
  });
});

describe('LlamaModel default matmul', () => {
  it('follows backend "auto": the wasm SIMD matmul on wasm, DeviceMatmul on cuda', async () => {
    const { checkpoint } = memoryCheckpoint(GQA);
    using model = await LlamaModel.create(checkpoint);
    const auto = (await resolveBackend('auto')).backend.name;
    expect(model.matmul.name).toMatch(auto === 'wasm' ? /^wasm-/ : new RegExp(`^device-${auto}$`));
  });
});

describe.each([
  ['JsMatmul', async () => new JsMatmul()],
  ['WasmMatmul', () => WasmMatmul.create()],
  ['DeviceMatmul', () => DeviceMatmul.create('wasm')],
] as [string, () => Promise<Matmul>][])('bad inputs to %s', (name, make) => {
  it('a weight that is not [rows, cols] or whose data does not fill it is a ShapeError', async () => {
    using matmul = await make();
    const data = new Float32Array(12);
    expect(() => matmul.prepare({ data, shape: [12], dtype: 'f32' })).toThrow(ShapeError);
    expect(() => matmul.prepare({ data, shape: [3, 4, 1], dtype: 'f32' })).toThrow(ShapeError);
    expect(() => matmul.prepare({ data, shape: [0, 4], dtype: 'f32' })).toThrow(ShapeError);
    expect(() => matmul.prepare({ data, shape: [3, 5], dtype: 'f32' })).toThrow(/\[3, 5\] weight needs 15 elements, got 12/);
  });

  it("a weight of an unknown dtype, or whose data is another dtype's array type, is a DTypeError naming it (before it is copied in)", async () => {
    using matmul = await make();
    for (const dtype of ['f64', 'i32', 'toString', undefined]) {
      expect(() => matmul.prepare({ data: new Float32Array(12), shape: [3, 4], dtype: dtype as never })).toThrow(DTypeError);
      expect(() => matmul.prepare({ data: new Float32Array(12), shape: [3, 4], dtype: dtype as never })).toThrow(new RegExp(`^${name}.prepare: dtype must be 'f32', 'f16' or 'bf16', got`));
    }
    expect(() => matmul.prepare({ data: new Float32Array(12), shape: [3, 4], dtype: 'bf16' })).toThrow(new RegExp(`^${name}.prepare: a 'bf16' weight holds its elements in a Uint16Array, got \\[object Float32Array\\]`));
    expect(() => matmul.prepare({ data: new Uint16Array(12), shape: [3, 4], dtype: 'f32' })).toThrow(DTypeError);
  });

  it('rows, x or out that do not match the weight are a ShapeError naming the sizes', async () => {
    using matmul = await make();
    const w = matmul.prepare({ data: new Float32Array(12), shape: [3, 4], dtype: 'f32' }); // N 3, K 4
    const out = new Float32Array(6);
    expect(() => matmul.linear(new Float32Array(8), 0, w, out)).toThrow(ShapeError);
    expect(() => matmul.linear(new Float32Array(8), 1.5, w, out)).toThrow(ShapeError);
    expect(() => matmul.linear(new Float32Array(7), 2, w, out)).toThrow(new RegExp(`${name}.linear: x holds 7 floats, 2 rows of 4 need 8`));
    expect(() => matmul.linear(new Float32Array(8), 2, w, out.subarray(1))).toThrow(new RegExp(`${name}.linear: out holds 5 floats, 2 rows of 3 need 6`));
    expect(() => matmul.linear(new Float32Array(8), 2, w, out)).not.toThrow();
  });

  it('a weight prepared by another matmul is a DeviceMismatchError; after dispose, DisposedError (JsMatmul holds nothing)', async () => {
    const matmul = await make();
    const other = await make();
    const theirs = other.prepare({ data: new Float32Array(12), shape: [3, 4], dtype: 'f32' });
    const mine = matmul.prepare({ data: new Float32Array(12), shape: [3, 4], dtype: 'f32' });
    expect(() => matmul.linear(new Float32Array(4), 1, theirs, new Float32Array(3))).toThrow(DeviceMismatchError);
    matmul.dispose();
    other.dispose();
    if (name === 'JsMatmul') return;
    expect(() => matmul.linear(new Float32Array(4), 1, mine, new Float32Array(3))).toThrow(DisposedError);
    expect(() => matmul.prepare({ data: new Float32Array(12), shape: [3, 4], dtype: 'f32' })).toThrow(DisposedError);
  });
});
