// Unusual but legal-looking host buffers handed to the SDK: typed-array subclasses (a species, a
// constructor of their own, getters that lie about length or byteOffset) and typed arrays of another
// realm (a vm context, as jsdom or an iframe makes them). Either the call gives exactly what plain
// arrays give, or it is a typed error with the cache unchanged. (Views with a byteOffset, subarrays,
// SharedArrayBuffers, resizable and detached buffers, out aliasing an input, and snapshot bytes as a
// view or a Buffer already were.)
import vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import { createCache, DTypeError, fromNumbers, loadCache, ShapeError, type DType, type Tensor } from '../../packages/shadowkv/src/backend.js';
import { KitInputs } from '../../packages/shadowkv/src/testing/inputs.js';
import { forEachEnv, type TestEnv } from '../envs.js';

const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const [Hq, Hkv, d] = [4, 2, 16];
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));
type Data = Float32Array | Uint16Array;
type Ctor = Float32ArrayConstructor | Uint16ArrayConstructor;
const ctorOf = (dtype: DType): Ctor => (dtype === 'f32' ? Float32Array : Uint16Array);

/** The arrays of another realm, as a vm context (or jsdom, or an iframe) hands them over. */
const foreign = vm.runInNewContext('({ Float32Array, Uint16Array, Uint8Array })') as { Float32Array: Float32ArrayConstructor; Uint16Array: Uint16ArrayConstructor; Uint8Array: Uint8ArrayConstructor };

/** Subclasses of `Base` a caller might hand in, each a copy of `src`. */
function subclasses(Base: Ctor): [string, (src: Data) => Data][] {
  const B = Base as Float32ArrayConstructor; // NOTE: one base type for the class syntax; Uint16Array behaves alike
  class Tagged extends B {
    constructor(readonly tag: string, n: number) {
      super(n);
    }
  }
  class Bytes extends B {
    static get [Symbol.species]() {
      return Uint8Array;
    }
  }
  class LongLength extends B {
    override get length(): number {
      return super.length + 8;
    }
  }
  class ShiftedOffset extends B {
    override get byteOffset(): number {
      return 4;
    }
  }
  const fill = <T extends Data>(t: T, src: Data) => (t.set(src as never), t);
  return [
    ['a constructor of its own', (src) => fill(new Tagged('q', src.length) as Data, src)],
    ['species Uint8Array', (src) => fill(new Bytes(src.length) as Data, src)],
    ['length that says 8 more', (src) => fill(new LongLength(src.length) as Data, src)],
    ['byteOffset that says 4', (src) => fill(new ShiftedOffset(src.length) as Data, src)],
    ["another realm's array", (src) => fill(new (foreign[Base.name as 'Float32Array'])(src.length) as Data, src)],
  ];
}

/** A prompt with queries and three steps of env.dtype inputs, run through a fresh cache with each array made by `make`. */
async function transcript(env: TestEnv, make: (src: Data) => Data, out?: () => Data) {
  const inputs = new KitInputs(7, spec);
  const io = (t: Tensor): Tensor => ({ data: make(fromNumbers(t.data as Float32Array, env.dtype)), shape: t.shape, dtype: env.dtype });
  const cache = await createCache({ spec, policy: 'full', dtype: env.dtype, backend: env.backend });
  const prompt = inputs.prompt(1, 10, true);
  const outputs: number[][] = [Array.from(cache.prefill(0, { keys: io(prompt.keys), values: io(prompt.values), queries: io(prompt.queries!) })!.data)];
  for (let t = 0; t < 3; t++) {
    const s = inputs.step(1);
    const o = out?.();
    const y = cache.decode(0, { query: io(s.query), key: io(s.key), value: io(s.value) }, o ? { out: o } : undefined);
    if (o) expect(y.data).toBe(o);
    outputs.push(Array.from(y.data));
  }
  const bytes = cache.save();
  cache.dispose();
  return { outputs, bytes };
}

forEachEnv('typed-array subclasses and arrays of another realm as inputs', (env) => {
  const Base = ctorOf(env?.dtype ?? 'f32'); // a skipped env's suite is collected without an env

  it.each(subclasses(Base))('inputs with %s give what plain arrays give', async (_, make) => {
    const plain = await transcript(env, (src) => src);
    const odd = await transcript(env, make);
    expect(odd.outputs).toEqual(plain.outputs);
    expect(same(odd.bytes, plain.bytes)).toBe(true);
  });

  it("an out of another realm is filled and returned, as a plain one", async () => {
    const plain = await transcript(env, (src) => src, () => new Base(Hq * d));
    const odd = await transcript(env, (src) => src, () => new foreign[Base.name as 'Float32Array'](Hq * d) as Data);
    expect(odd.outputs).toEqual(plain.outputs);
  });

  it("save()'s bytes copied into another realm's Uint8Array restore the same cache", async () => {
    const { bytes } = await transcript(env, (src) => src);
    const copy = new foreign.Uint8Array(bytes.length);
    copy.set(bytes);
    const restored = await loadCache(copy, { backend: env.backend });
    expect(same(restored.save(), bytes)).toBe(true);
    restored.dispose();
  });
});

forEachEnv('typed-array subclasses and arrays of another realm into device tensors', (env) => {
  const Base = ctorOf(env?.dtype ?? 'f32'); // a skipped env's suite is collected without an env
  const n = Hq * d;
  const values = (k: number) => (Base as Float32ArrayConstructor).from({ length: n }, (_, i) => (env.dtype === 'f32' ? k + i : 0x3f80 + ((k + i) & 0x3f))) as Data;

  it('write() of an array longer than its length says is a ShapeError that writes nothing, the next tensor included', async () => {
    const cache = await createCache({ spec, policy: 'full', dtype: env.dtype, backend: env.backend });
    const t = cache.allocTensor([1, Hq, 1, d], env.dtype, values(1));
    const next = cache.allocTensor([1, Hq, 1, d], env.dtype, values(2));
    class Short extends (Base as Float32ArrayConstructor) {
      override get length(): number {
        return n;
      }
    }
    const long = new Short(4 * n) as Data;
    long.fill(env.dtype === 'f32' ? 7 : 0x40e0);
    expect(() => t.write(long)).toThrow(ShapeError);
    expect(Array.from(t.read())).toEqual(Array.from(values(1)));
    expect(Array.from(next.read())).toEqual(Array.from(values(2)));
    expect(() => t.read(new Short(4) as Data)).toThrow(/into has 4/);
    cache.dispose();
  });

  it('write() and read() take subclasses and arrays of another realm by their own elements', async () => {
    const cache = await createCache({ spec, policy: 'full', dtype: env.dtype, backend: env.backend });
    for (const [name, make] of subclasses(Base)) {
      const src = values(3);
      const t = cache.allocTensor([1, Hq, 1, d], env.dtype, make(src));
      expect(Array.from(t.read()), name).toEqual(Array.from(src));
      t.write(make(values(4)));
      const into = make(new Base(n));
      expect(t.read(into), name).toBe(into);
      expect(Array.from(new Base(into as never)), name).toEqual(Array.from(values(4)));
      t.dispose();
    }
    cache.dispose();
  });
});

describe('what stays refused', () => {
  it("another realm's array of the wrong kind is a DTypeError that names its kind", async () => {
    const cache = await createCache({ spec, policy: 'full', dtype: 'f32', backend: 'wasm' });
    const s = new KitInputs(8, spec).step(1);
    expect(() => cache.decode(0, { ...s, query: { ...s.query, data: new foreign.Uint16Array(Hq * d) as never } })).toThrow(/query has dtype 'f32' but its data is a Uint16Array/);
    expect(() => cache.decode(0, { ...s, key: { ...s.key, data: new foreign.Uint8Array(Hkv * d * 4) as never } })).toThrow(DTypeError);
    expect(() => cache.decode(0, s, { out: new foreign.Uint16Array(Hq * d) as never })).toThrow(/out must be a Float32Array for 'f32' inputs, got Uint16Array/);
    expect(cache.length(0)).toBe(0);
    cache.dispose();
  });
});
