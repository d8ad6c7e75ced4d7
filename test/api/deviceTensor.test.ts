import { afterEach, expect, it } from 'vitest';
import {
  ConfigError, createCache, DeviceMismatchError, DeviceTensor, DisposedError, DTypeError, NonFiniteError, OutOfMemoryError, ShapeError,
  type Cache, type DType, type Tensor,
} from '../../packages/shadowkv/src/backend.js';
import { forEachEnv, type TestEnv } from '../envs.js';
import { faults, registerFaultyWasm } from '../helpers/backends.js';
import { randomTensor, rng } from '../helpers/data.js';

// Device tensors: inputs and outputs that stay in the backend's memory (the GPU on CUDA, the cache's
// heap on wasm). The same calls with device tensors give what they give with host arrays, bit for
// bit; outputs, lifetimes, foreign and disposed tensors, and the value checks on the device.
const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 };
const { layers, queryHeads: Hq, kvHeads: Hkv, headDim: d } = spec;
const B = 2;

const open: Cache[] = [];
afterEach(() => open.splice(0).forEach((c) => c.dispose()));
async function make(env: TestEnv, policy: 'shadowkv' | 'full' = 'shadowkv', dtype: DType = env.dtype): Promise<Cache> {
  const cache = await createCache({ spec, policy, backend: env.backend, dtype, batch: B, options: policy === 'shadowkv' ? options : undefined });
  open.push(cache);
  return cache;
}
const bits = (t: { data: ArrayLike<number> } | Float32Array | Uint16Array) => Array.from('data' in t ? t.data : t);
/** A device copy of a host tensor on `cache`. */
const onDevice = (cache: Cache, t: Tensor) => cache.allocTensor(t.shape, t.dtype, t.data);

forEachEnv('device tensors', (env) => {
  const rand = rng(7);
  const host = (shape: number[], dtype: DType = env.dtype) => randomTensor(shape, dtype, rand).t;
  const stepInput = () => ({ query: host([B, Hq, 1, d]), key: host([B, Hkv, 1, d]), value: host([B, Hkv, 1, d]) });

  it.each(['shadowkv', 'full'] as const)('%s: prefill and 60 decode steps with device tensors equal the host path bit for bit (compression and compaction included)', async (policy) => {
    const [a, b] = [await make(env, policy), await make(env, policy)];
    for (let l = 0; l < layers; l++) {
      const [keys, values, queries] = [host([B, Hkv, 60, d]), host([B, Hkv, 60, d]), host([B, Hq, 60, d])];
      const want = a.prefill(l, { keys, values, queries })!;
      const got = b.prefill(l, { keys: onDevice(b, keys), values: onDevice(b, values), queries: onDevice(b, queries) });
      expect(got).toBeInstanceOf(DeviceTensor);
      expect(got.owner).toBe('caller');
      expect(bits(got.read())).toEqual(bits(want));
      got.dispose();
    }
    const inputs = { query: b.allocTensor([B, Hq, 1, d], env.dtype), key: b.allocTensor([B, Hkv, 1, d], env.dtype), value: b.allocTensor([B, Hkv, 1, d], env.dtype) };
    for (let t = 0; t < 60; t++) {
      for (let l = 0; l < layers; l++) {
        const x = stepInput();
        inputs.query.write(x.query.data);
        inputs.key.write(x.key.data);
        inputs.value.write(x.value.data);
        const out = b.decode(l, inputs);
        expect(out.owner).toBe('cache');
        expect(out.shape).toEqual([B, Hq, 1, d]);
        expect(bits(out.read()), `step ${t}, layer ${l}`).toEqual(bits(a.decode(l, x)));
      }
    }
    if (policy === 'shadowkv') expect(b.stats().compactions).toBeGreaterThan(0);
    expect(Buffer.from(b.save()).equals(Buffer.from(a.save()))).toBe(true);
  });

  it('out: a device tensor the step writes, returned as it is; host out and host results still work with device inputs', async () => {
    const [a, b] = [await make(env), await make(env)];
    const out = b.allocTensor([1, Hq, 1, d], env.dtype);
    for (let t = 0; t < 4; t++) {
      const x = { query: host([1, Hq, 1, d]), key: host([1, Hkv, 1, d]), value: host([1, Hkv, 1, d]) };
      const dev = { query: onDevice(b, x.query), key: onDevice(b, x.key), value: onDevice(b, x.value) };
      const want = a.decode(0, x, { sequences: [1] });
      if (t % 2 === 0) expect(b.decode(0, dev, { sequences: [1], out })).toBe(out);
      else expect(b.decode(0, x, { sequences: [1], out })).toBe(out); // host inputs, device out
      expect(bits(out.read())).toEqual(bits(want));
      const hostOut = env.dtype === 'f32' ? new Float32Array(Hq * d) : new Uint16Array(Hq * d);
      expect(b.decode(1, dev, { sequences: [0], out: hostOut }).data).toBe(hostOut);
      expect(bits(hostOut)).toEqual(bits(a.decode(1, x, { sequences: [0] })));
      Object.values(dev).forEach((v) => v.dispose());
    }
  });

  it("a decode output is the cache's: valid across other layers' steps, retired by the next decode of its layer", async () => {
    const cache = await make(env);
    const dev = () => { const x = stepInput(); return { query: onDevice(cache, x.query), key: onDevice(cache, x.key), value: onDevice(cache, x.value) }; };
    const o0 = cache.decode(0, dev());
    const seen = bits(o0.read());
    const o1 = cache.decode(1, dev());
    expect(bits(o0.read())).toEqual(seen);
    const length = cache.length(0);
    // The layer's previous output as this step's input (the step would overwrite it): rejected, nothing changed.
    expect(() => cache.decode(0, { ...dev(), query: o0 })).toThrow(ShapeError);
    expect(cache.length(0)).toBe(length);
    cache.decode(0, dev());
    expect(o0.disposed).toBe(true);
    expect(() => o0.read()).toThrow(DisposedError);
    expect(() => cache.decode(1, dev(), { out: o0 })).toThrow(/out is a device tensor that was disposed \(a decode output is replaced by the next decode of its layer/);
    expect(o1.disposed).toBe(false);
    // One layer's output as the next layer's input is fine (another buffer); it retires that layer's own.
    const fromLayer0 = cache.decode(0, dev());
    expect(cache.decode(1, { ...dev(), query: fromLayer0 }).disposed).toBe(false);
    expect(o1.disposed).toBe(true);
  });

  it('out overlapping an input, and device tensors of the wrong shape or dtype, are typed errors that change nothing', async () => {
    const cache = await make(env);
    const x = stepInput();
    const query = onDevice(cache, x.query);
    const key = onDevice(cache, x.key), value = onDevice(cache, x.value);
    const before = Buffer.from(cache.save());
    expect(() => cache.decode(0, { query, key, value }, { out: query })).toThrow(/out overlaps query/);
    expect(() => cache.decode(0, { query: cache.allocTensor([B, Hq + 1, 1, d], env.dtype), key, value })).toThrow(ShapeError);
    expect(() => cache.decode(0, { query, key: cache.allocTensor([B, Hkv, 1, d], env.dtype === 'f32' ? 'bf16' : 'f32'), value })).toThrow(DTypeError);
    expect(() => cache.decode(0, { query, key, value }, { out: cache.allocTensor([B, Hq, 1, d + 1], env.dtype) })).toThrow(ShapeError);
    expect(() => cache.prefill(0, { keys: key, values: cache.allocTensor([B, Hkv, 2, d], env.dtype) })).toThrow(ShapeError);
    expect(() => cache.allocTensor([2, 0], 'f32')).toThrow(ShapeError);
    expect(() => cache.allocTensor([2], 'i32' as never)).toThrow(DTypeError);
    expect(() => query.write(new Float32Array(3))).toThrow(env.dtype === 'f32' ? ShapeError : DTypeError);
    expect(Buffer.from(cache.save()).equals(before)).toBe(true);
  });

  it('NaN, infinities and keys past their storage range in device tensors: NonFiniteError naming the flat index, nothing changed; checkValues: false skips the check', async () => {
    const cache = await make(env, 'shadowkv', 'f16');
    const x = stepInput();
    const f32 = (t: Tensor) => randomTensor(t.shape as number[], 'f32', rand).t;
    const bad = (t: Tensor, i: number, v: number) => { const data = Float32Array.from(f32(t).data as Float32Array); data[i] = v; return cache.allocTensor(t.shape, 'f32', data); };
    const ok = { query: cache.allocTensor([B, Hq, 1, d], 'f32', f32(x.query).data), key: cache.allocTensor([B, Hkv, 1, d], 'f32', f32(x.key).data), value: cache.allocTensor([B, Hkv, 1, d], 'f32', f32(x.value).data) };
    const before = Buffer.from(cache.save());
    expect(() => cache.decode(0, { ...ok, query: bad(x.query, 37, NaN) })).toThrow(/^decode\(layer 0\): query\[37\] is NaN \(flat index\); inputs must be finite$/);
    expect(() => cache.decode(0, { ...ok, value: bad(x.value, 5, -Infinity) })).toThrow(NonFiniteError);
    // f16 storage holds |x| <= 65504, and a key must stay within 1/sqrt(2) of that to survive RoPE.
    expect(() => cache.decode(0, { ...ok, key: bad(x.key, 9, 50000) })).toThrow(/key\[9\] is 50000 \(flat index\); inputs must be finite and within ±46318\.3 to fit 'f16' storage after RoPE/);
    expect(() => cache.prefill(0, { keys: bad(host([1, Hkv, 6, d]), 100, NaN), values: onDevice(cache, host([1, Hkv, 6, d], 'f32')) })).toThrow(/keys\[100\] is NaN/);
    expect(Buffer.from(cache.save()).equals(before)).toBe(true);
    expect(() => cache.decode(0, { ...ok, query: bad(x.query, 37, NaN) }, { checkValues: false })).not.toThrow();
    expect(cache.length(0)).toBe(1);
    expect(() => cache.decode(0, ok, { checkValues: 'no' as never })).toThrow(ConfigError);
  });

  it('tensors of another cache: another heap on wasm (DeviceMismatchError), the same GPU on CUDA (accepted)', async () => {
    const [a, b] = [await make(env), await make(env)];
    const x = stepInput();
    const theirs = { query: onDevice(b, x.query), key: onDevice(b, x.key), value: onDevice(b, x.value) };
    if (env.backend === 'wasm') {
      expect(() => a.decode(0, theirs)).toThrow(DeviceMismatchError);
      expect(() => a.decode(0, theirs)).toThrow(/query is a device tensor of another wasm device .*Make it with this cache's allocTensor\(\), or pass a host Tensor/);
      expect(a.length(0)).toBe(0);
    } else {
      expect(bits(a.decode(0, theirs).read())).toEqual(bits(b.decode(0, x)));
    }
  });

  it("disposed tensors are DisposedErrors; the cache's dispose frees the tensors it made", async () => {
    const cache = await make(env);
    const before = cache.memory().device;
    const x = stepInput();
    const query = onDevice(cache, x.query);
    expect(cache.memory().components.tensor).toBe(B * Hq * d * (env.dtype === 'f32' ? 4 : 2));
    query.dispose();
    query.dispose(); // idempotent
    expect(cache.memory().device).toBe(before);
    expect(() => cache.decode(0, { ...x, query })).toThrow(DisposedError);
    const kept = onDevice(cache, x.key);
    const out = cache.decode(0, { query: onDevice(cache, x.query), key: kept, value: onDevice(cache, x.value) });
    open.splice(open.indexOf(cache), 1);
    cache.dispose();
    expect([kept.disposed, out.disposed]).toEqual([true, true]);
    expect(() => kept.read()).toThrow(DisposedError);
    expect(() => cache.allocTensor([1], 'f32')).toThrow(DisposedError);
  });

  it('wrapTensor: memory the host loop owns (CUDA device pointers), never freed by the SDK; wasm cannot wrap', async () => {
    const [cache, loop] = [await make(env), await make(env, 'full')];
    if (env.backend === 'wasm') {
      expect(() => cache.wrapTensor(4096, [B, Hq, 1, d], env.dtype)).toThrow(ConfigError);
      return;
    }
    const x = stepInput();
    // Memory of "the host loop": another cache's tensors on the same GPU.
    const mine = { query: onDevice(loop, x.query), key: onDevice(loop, x.key), value: onDevice(loop, x.value) };
    const held = loop.memory().device;
    const wrapped = {
      query: cache.wrapTensor(mine.query.address, [B, Hq, 1, d], env.dtype),
      key: cache.wrapTensor(mine.key.address, [B, Hkv, 1, d], env.dtype),
      value: cache.wrapTensor(mine.value.address, [B, Hkv, 1, d], env.dtype),
    };
    expect(wrapped.query.owner).toBe('external');
    const twin = await make(env);
    expect(bits(cache.decode(0, wrapped).read())).toEqual(bits(twin.decode(0, x)));
    Object.values(wrapped).forEach((w) => w.dispose());
    open.splice(open.indexOf(cache), 1);
    cache.dispose();
    expect(loop.memory().device).toBe(held);
    expect(bits(mine.query.read())).toEqual(bits(x.query));
    expect(() => twin.wrapTensor(4096, [1], 'f32')).toThrow(DeviceMismatchError); // not device memory
    expect(() => twin.wrapTensor(-1, [1], 'f32')).toThrow(ConfigError);
  });
});

it('out of memory for a device output (prefill) or its per-layer buffer (decode): OutOfMemoryError, the cache unchanged', async () => {
  const backend = registerFaultyWasm();
  const cache = await createCache({ spec, backend, dtype: 'f32', batch: B, options });
  open.push(cache);
  const rand = rng(3);
  const t = (shape: number[]) => cache.allocTensor(shape, 'f32', randomTensor(shape, 'f32', rand).t.data);
  const prompt = { keys: t([B, Hkv, 20, d]), values: t([B, Hkv, 20, d]), queries: t([B, Hq, 20, d]) };
  const step = { query: t([B, Hq, 1, d]), key: t([B, Hkv, 1, d]), value: t([B, Hkv, 1, d]) };
  const before = Buffer.from(cache.save());
  const memory = cache.memory();
  faults.fail = (tag) => tag === 'tensor';
  expect(() => cache.prefill(0, prompt)).toThrow(OutOfMemoryError);
  faults.fail = (tag) => tag === 'scratch';
  expect(() => cache.decode(0, step)).toThrow(OutOfMemoryError);
  faults.fail = undefined;
  expect(Buffer.from(cache.save()).equals(before)).toBe(true);
  expect(cache.memory().components).toEqual(memory.components);
  expect(cache.prefill(0, prompt).read().length).toBe(B * Hq * 20 * d);
  expect(cache.decode(0, step).read().length).toBe(B * Hq * d);
});
