// The tensor I/O contract under hostile arrays and argument objects: what a call checks is what it
// uses (one copy, sizes taken again after every getter ran, real typed-array lengths), a rejected call
// keeps the previous output readable, and scratch memory neither leaks nor dangles. Cases from trying
// the API as an adversary would (bench/NOTES.md v47); each test covers the case's class.
import { describe, expect, it } from 'vitest';
import {
  ConfigError, createCache, DTypeError, fromNumbers, NonFiniteError, OutOfMemoryError, SequenceIndexError, ShapeError, toFloat32,
} from '../../packages/shadowkv/src/backend.js';
import { MemoryLedger } from '../../packages/shadowkv/src/backends/MemoryLedger.js';
import type { BufferDType, DeviceBuffer } from '../../packages/shadowkv/src/backends/Device.js';
import { KitInputs } from '../../packages/shadowkv/src/testing/inputs.js';

const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const [Hq, Hkv, d] = [4, 2, 16];
const full = () => createCache({ spec, policy: 'full', dtype: 'f32', backend: 'wasm' });

describe('what a call checked is what it uses', () => {
  it('an input resized or detached by a later getter of the same call is a ShapeError, and nothing is stored', async () => {
    const cache = await full();
    const inputs = new KitInputs(1, spec);
    cache.prefill(0, inputs.prompt(1, 10));
    const bytes = cache.save();
    const step = inputs.step(1);
    // NOTE: resizable buffers are ES2024 (Node 20 has them; the project's lib is older).
    type Resizable = ArrayBuffer & { resize(bytes: number): void };
    const resizable = (n: number) => {
      const buf = new (ArrayBuffer as unknown as new (bytes: number, o: { maxByteLength: number }) => Resizable)(n * 4, { maxByteLength: n * 4 });
      return { buf, data: new Float32Array(buf) };
    };
    // decode: the key's getter shrinks the query, then (another call) detaches it.
    const q = resizable(Hq * d);
    q.data.set(step.query.data as Float32Array);
    const shrinking = { get data() { q.buf.resize(8); return step.key.data; }, shape: step.key.shape, dtype: 'f32' as const };
    expect(() => cache.decode(0, { query: { ...step.query, data: q.data }, key: shrinking, value: step.value })).toThrow(/query holds 2 elements after the call's getters ran, not the 64/);
    const detachable = new Float32Array(step.query.data as Float32Array);
    const detaching = { get data() { structuredClone(detachable.buffer, { transfer: [detachable.buffer] }); return step.key.data; }, shape: step.key.shape, dtype: 'f32' as const };
    expect(() => cache.decode(0, { query: { ...step.query, data: detachable }, key: detaching, value: step.value })).toThrow(ShapeError);
    // prefill: the values' getter empties the keys.
    const prompt = inputs.prompt(1, 10);
    const k = resizable(Hkv * 10 * d);
    k.data.set(prompt.keys.data as Float32Array);
    const emptying = { get data() { k.buf.resize(0); return prompt.values.data; }, shape: prompt.values.shape, dtype: 'f32' as const };
    expect(() => cache.prefill(0, { keys: { ...prompt.keys, data: k.data }, values: emptying })).toThrow(/keys holds 0 elements after the call's getters ran/);
    expect(Buffer.from(cache.save()).equals(Buffer.from(bytes))).toBe(true);
    cache.dispose();
  });

  it('a typed-array subclass that redefines length is measured by its real length', async () => {
    const cache = await full();
    const inputs = new KitInputs(2, spec);
    cache.prefill(0, inputs.prompt(1, 5));
    class Liar extends Float32Array {
      override get length(): number {
        return Hq * d;
      }
    }
    const step = inputs.step(1);
    expect(() => cache.decode(0, step, { out: new Liar(4) })).toThrow(/out holds 4 elements, expected 64/);
    expect(() => cache.decode(0, { ...step, query: { ...step.query, data: new Liar(4) } }, { checkValues: false })).toThrow(/query has shape \[1, 4, 1, 16\] \(64 elements\) but 4 elements of data/);
    expect(cache.length(0)).toBe(5);
    cache.dispose();
  });

  it('allocTensor checks one copy of the shape and uses it: holes and getters that change are ShapeErrors', async () => {
    const cache = await full();
    // eslint-disable-next-line no-sparse-arrays
    expect(() => cache.allocTensor([1, , 16] as never, 'f32')).toThrow(ShapeError);
    let reads = 0;
    const shifty = [1, 4];
    Object.defineProperty(shifty, 1, { get: () => (reads++ === 0 ? 4 : -3) });
    const t = cache.allocTensor(shifty, 'f32');
    expect(t.shape).toEqual([1, 4]);
    expect(t.read().length).toBe(4);
    cache.dispose();
  });

  it("misspelt keys of a call's input or options are ConfigErrors: a sequence meant for row 1 must not land in row 0", async () => {
    const cache = await createCache({ spec, policy: 'full', dtype: 'f32', backend: 'wasm', batch: 2 });
    const inputs = new KitInputs(3, spec);
    expect(() => cache.prefill(0, { ...inputs.prompt(1, 4), sequence: [1] } as never)).toThrow(/input: unknown option 'sequence'/);
    cache.prefill(0, inputs.prompt(2, 4));
    expect(() => cache.decode(0, inputs.step(2), { Out: new Float32Array(2 * Hq * d) } as never)).toThrow(ConfigError);
    expect(() => cache.decode(0, { ...inputs.step(2), keys: 1 } as never)).toThrow(ConfigError);
    expect([cache.length(0), cache.length(1)]).toEqual([4, 4]);
    cache.dispose();
  });

  it('sequences longer than the batch are refused at once, not copied first', async () => {
    const cache = await full();
    const sparse: number[] = [];
    sparse.length = 2 ** 32 - 1;
    const t0 = performance.now();
    expect(() => cache.decode(0, new KitInputs(4, spec).step(1), { sequences: sparse })).toThrow(SequenceIndexError);
    expect(() => cache.prefill(0, { ...new KitInputs(4, spec).prompt(1, 2), sequences: sparse })).toThrow(SequenceIndexError);
    expect(performance.now() - t0).toBeLessThan(1000); // a copy of 2^32 - 1 holes took 5 s and 1.7 GB
    cache.dispose();
  });

  it('the dtype helpers refuse an unknown dtype and data of another dtype', () => {
    for (const dtype of ['f64', 'float32', 'F32', undefined]) expect(() => fromNumbers([1], dtype as never), String(dtype)).toThrow(DTypeError);
    expect(() => toFloat32({ data: new Uint16Array([0x3f80]), shape: [1], dtype: 'fp16' as never })).toThrow(DTypeError);
    expect(() => toFloat32({ data: new Float32Array([1.5]), shape: [1], dtype: 'bf16' })).toThrow(/a 'bf16' tensor holds its elements in a Uint16Array, got Float32Array/);
    expect(Array.from(toFloat32({ data: fromNumbers([1.5, -2], 'bf16'), shape: [2], dtype: 'bf16' }))).toEqual([1.5, -2]);
  });
});

describe('a rejected decode keeps the previous output', () => {
  it('the layer output of the last step stays readable when the next step is refused', async () => {
    const options = { rank: 8, chunkSize: 4, budget: 16, outlierChunks: 2, localTokens: 8, maxRecentTokens: 16, denseThreshold: 48 };
    const cache = await createCache({ spec, policy: 'shadowkv', dtype: 'f16', backend: 'wasm', batch: 2, options });
    const inputs = new KitInputs(5, spec);
    cache.prefill(0, { ...inputs.prompt(1, 20), sequences: [0] });
    const prompt = inputs.prompt(1, 200);
    const k = prompt.keys.data as Float32Array;
    for (let i = 0; i < k.length; i++) k[i] = Math.max(-46000, Math.min(46000, k[i]! * 10000));
    cache.prefill(0, { ...prompt, sequences: [1] });
    const dev = (t: { data: Float32Array | Uint16Array; shape: number[] }) => cache.allocTensor(t.shape, 'f32', t.data);
    const step = () => {
      const s = inputs.step(1);
      return { query: dev(s.query as never), key: dev(s.key as never), value: dev(s.value as never) };
    };
    const y = cache.decode(0, step(), { sequences: [0] });
    const seen = y.read();
    expect(() => cache.decode(0, step(), { sequences: [1] })).toThrow(NonFiniteError); // row 1 cannot compress in f16
    expect(y.disposed).toBe(false);
    expect(Array.from(y.read())).toEqual(Array.from(seen));
    cache.decode(0, step(), { sequences: [0] });
    expect(y.disposed).toBe(true); // a step that runs replaces it, as documented
    cache.dispose();
  });
});

describe('scratch buffers (MemoryLedger)', () => {
  // A device of numbered buffers that refuses allocations past `limit` elements.
  const device = (limit: number) => {
    const live = new Set<DeviceBuffer>();
    let next = 0;
    return {
      live,
      alloc(length: number, dtype: BufferDType): DeviceBuffer {
        if (length > limit) throw new OutOfMemoryError(`test: ${length} past ${limit}`);
        const buf = { ptr: ++next, length, dtype, tier: 'device', tag: 'scratch' } as unknown as DeviceBuffer;
        live.add(buf);
        return buf;
      },
      free(buf: DeviceBuffer) {
        if (!live.delete(buf)) throw new Error('test: freed twice');
      },
    };
  };

  it('a growth that fails leaves the old buffer in place and registered (never freed, never freed twice)', () => {
    const ledger = new MemoryLedger();
    const dev = device(200);
    const small = ledger.scratch(dev, 'x', 60, 'f32');
    expect(() => ledger.scratch(dev, 'x', 201, 'f32')).toThrow(OutOfMemoryError);
    expect(dev.live.has(small)).toBe(true);
    expect(ledger.scratch(dev, 'x', 50, 'f32')).toBe(small);
    const grown = ledger.scratch(dev, 'x', 90, 'f32');
    expect([...dev.live]).toEqual([grown]);
  });

  it('calls alternating dtypes keep one buffer per dtype instead of doubling each time', () => {
    const ledger = new MemoryLedger();
    const dev = device(1 << 20);
    for (let i = 0; i < 40; i++) ledger.scratch(dev, 'step.qkv', 96, i % 2 ? 'f32' : 'f16');
    expect([...dev.live].map((b) => b.length)).toEqual([96, 96]);
  });
});
