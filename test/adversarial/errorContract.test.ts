// Errors of the core name the problem, one class a describe. Cases from a probe of the core (each
// test covers its case's class); the standard: bad input is a typed error naming the problem, and a
// rejected call leaves what it was given as it was.
import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  at, checkKeys, compileWasm, ConfigError, createCache, DTypeError, estimateMemory, instantiateWasm, listPolicies, OutOfMemoryError, resolveSpec, WasmDevice,
  WasmTrapError, type BufferDType, type DeviceBuffer, type View, type WasmExports,
} from '../../packages/shadowkv/src/backend.js';
import { CudaDevice } from '../../packages/shadowkv-cuda/src/index.js';
import { drawSample, MAX_SAMPLE_LENGTH, minSampleLength, TASK_NAMES } from '../../bench/eval/tasks.js';
import { isTyped, showError, thrown } from '../helpers/adversarial.js';
import { stubAddon } from '../helpers/stubAddon.js';

const module = await compileWasm();
const newDevice = () => new WasmDevice(instantiateWasm(module));
const exportsOf = (device: WasmDevice) => (device as unknown as { instance: WasmExports }).instance;

/** 16 floats each of a, b and c on `device`, a and b filled. */
function operands(device: WasmDevice): DeviceBuffer[] {
  const bufs = [0, 1, 2].map(() => device.alloc(16, 'f32', 'test'));
  bufs.slice(0, 2).forEach((buf, j) => device.write(at(buf), Float32Array.from({ length: 16 }, (_, i) => Math.sin(i * (j + 1) * 0.37))));
  return bufs;
}

/** c = a b (4 x 4), read back: what a device that works computes. */
function product(device: WasmDevice, [a, b, c]: DeviceBuffer[]): number[] {
  device.gemm({ M: 4, N: 4, K: 4, a: at(a!), lda: 4, b: at(b!), ldb: 4, c: at(c!), ldc: 4 });
  return Array.from(device.read(at(c!) as View & { buf: { dtype: 'f32' } }, 16));
}

// The last 16 bytes of wasm32's address space: an op reading more runs past the end of any heap, even a full one.
const far = (buf: DeviceBuffer, dtype: BufferDType = buf.dtype): View => ({ buf: { ...buf, dtype, ptr: 2 ** 32 - 16 }, offset: 0 });

/** One op of each kind (those whose runtime call was not guarded before included), made to read out of bounds. */
const OUT_OF_BOUNDS: [op: string, call: (device: WasmDevice, bufs: DeviceBuffer[]) => void][] = [
  ['gemm', (d, [a, b, c]) => d.gemm({ M: 4, N: 4, K: 4, a: far(a!), lda: 4, b: at(b!), ldb: 4, c: at(c!), ldc: 4 })],
  ['convert', (d, [a, b]) => d.convert(far(a!, 'bf16'), at(b!), 8)],
  ['convert_rows', (d, [a, b]) => d.convertRows(at({ ...a!, dtype: 'bf16' }), 4, far(b!), 4, 2, 4)],
  ['causal_attention', (d, [a, b, c]) => d.causalAttention(far(a!), 1, 2, 8, 0.3, 0, at(b!), at(c!), at(c!))],
  ['landmarks', (d, [a, b, c]) => d.landmarks(far(a!), 8, 2, 4, 8, at(b!), at(c!))],
  ['score_chunks', (d, [a, b, c]) => d.scoreChunks(far(a!), 1, 8, 0.3, at(b!), 4, at(c!))],
  ['quantize_values', (d, [a, b]) => d.quantizeValues(far(a!), at(b!), 1, 4, 8)],
];

describe('a wasm trap is an OutOfMemoryError only where an allocation failed', () => {
  it.each(OUT_OF_BOUNDS)('%s: an out-of-bounds access is a WasmTrapError naming the op and the trap; the device then computes as a fresh one', (op, call) => {
    const device = newDevice();
    const bufs = operands(device);
    const stackTop = exportsOf(device).stackSave?.();
    const err = thrown(() => call(device, bufs));
    expect(err, showError(err)).toBeInstanceOf(WasmTrapError);
    expect(isTyped(err) && err.code).toBe('SKV_WASM_TRAP');
    expect((err as Error).message).toMatch(new RegExp(`^${op}: the wasm runtime trapped \\(memory access out of bounds\\)`));
    if (stackTop !== undefined) expect(exportsOf(device).stackSave!()).toBe(stackTop);
    const fresh = newDevice();
    expect(product(device, bufs)).toEqual(product(fresh, operands(fresh)));
  });

  it('a full heap is an OutOfMemoryError; once memory is freed the op runs', () => {
    const device = newDevice();
    // Causal attention with d = 1024 needs more scratch than the arena holds: a heap allocation.
    const d = 1024;
    const [q, k, v, out] = [0, 1, 2, 3].map(() => device.alloc(3 * d, 'f32', 'test'));
    [q, k, v].forEach((buf, j) => device.write(at(buf!), Float32Array.from({ length: 3 * d }, (_, i) => Math.cos(i * (j + 2) * 0.11))));
    const attend = () => device.causalAttention(at(q!), 1, 3, d, 1 / 32, 0, at(k!), at(v!), at(out!));
    // Address space only: the filler is never touched.
    const filler: DeviceBuffer[] = [];
    for (let floats = 2 ** 26; floats >= 4; floats /= 2) {
      while (!(thrown(() => filler.push(device.alloc(floats, 'f32', 'filler'))) instanceof OutOfMemoryError));
    }
    const full = thrown(attend);
    expect(full, showError(full)).toBeInstanceOf(OutOfMemoryError);
    expect((full as Error).message).toMatch(/^causal_attention: the wasm runtime trapped \(unreachable\) on an allocation its heap could not give/);
    filler.forEach((buf) => device.free(buf));
    attend();
  });

  it('an allocation past any wasm32 heap is an OutOfMemoryError, and the next trap of another kind is not one', () => {
    const device = newDevice();
    const bufs = operands(device);
    const [a, b, c] = bufs;
    // 2 chunks of 2^30 rows: more rows than the runtime's GEMM takes, and more keys than 4 GB hold.
    const rebuild = () => device.rebuildKeys({ u: at(a!), rank: 2, sv: at(b!), ldsv: 4, d: 4, chunkIds: Int32Array.of(0, 1), slots: Int32Array.of(0, 1), C: 2 ** 30, invFreq: device.alloc(2, 'f64', 'test'), style: 'half', out: at(c!), ldo: 4 });
    const big = thrown(rebuild);
    expect(big, showError(big)).toBeInstanceOf(OutOfMemoryError);
    expect((big as Error).message).toMatch(/^rebuild_keys: the wasm runtime trapped \(unreachable\) on an allocation/);
    const next = thrown(() => OUT_OF_BOUNDS[0]![1](device, bufs));
    expect(next, showError(next)).toBeInstanceOf(WasmTrapError);
    expect(thrown(rebuild)).toBeInstanceOf(OutOfMemoryError);
  });
});

describe('an unknown dtype is a DTypeError naming it and the known ones, before anything is sized', () => {
  const UNKNOWN: unknown[] = ['f8', 'F32', 'toString', '', undefined, null, 2];
  const known = /known: 'f32', 'f16', 'bf16', 'i32', 'f64'/;

  it.each(UNKNOWN.map((dtype) => [String(dtype), dtype]))('WasmDevice alloc and scratch of dtype %s', (_, dtype) => {
    const device = newDevice();
    const before = device.allocations();
    for (const call of [() => device.alloc(4, dtype as BufferDType, 'test'), () => device.scratch('test', 4, dtype as BufferDType)]) {
      const err = thrown(call);
      expect(err, showError(err)).toBeInstanceOf(DTypeError);
      expect((err as Error).message).toMatch(known);
      expect((err as Error).message).not.toMatch(/NaN/);
    }
    expect(device.allocations()).toBe(before);
    expect(device.memory().device).toBe(0);
  });

  it.each(UNKNOWN.map((dtype) => [String(dtype), dtype]))('CudaDevice alloc and wrap of dtype %s: refused before any addon call', (_, dtype) => {
    const { addon, calls } = stubAddon();
    const device = new CudaDevice(addon, 0);
    for (const call of [() => device.alloc(4, dtype as BufferDType, 'test'), () => device.alloc(4, dtype as BufferDType, 'test', 'host'), () => device.wrap(0x3_0000_0000, 4, dtype as BufferDType)]) {
      const err = thrown(call);
      expect(err, showError(err)).toBeInstanceOf(DTypeError);
      expect((err as Error).message).toMatch(known);
    }
    expect(calls).toEqual([]);
  });

  it('an op on a buffer without a storage dtype (an index table, or an unknown dtype) names it and the stored ones', () => {
    const device = newDevice();
    const [a, b] = operands(device);
    const table = device.alloc(16, 'i32', 'test');
    for (const [src, name] of [[at(table), '"i32"'], [at({ ...a!, dtype: 'f8' as BufferDType }), '"f8"']] as const) {
      const err = thrown(() => device.convert(src, at({ ...b!, dtype: 'bf16' }), 8));
      expect(err, showError(err)).toBeInstanceOf(DTypeError);
      expect((err as Error).message).toBe(`${name} has no storage dtype code; the runtimes store 'f32', 'f16', 'bf16'`);
    }
  });
});

describe('drawSample refuses what it cannot draw with a ConfigError naming the argument', () => {
  /** Runs the calls in a child process: on NaN the old sampler drew filler forever (killed here after 20 s). */
  function inChild(calls: string[]): Promise<{ name?: string; code?: string; message?: string; ok?: boolean }[]> {
    const code = `
      const { drawSample } = await import(${JSON.stringify(new URL('../../bench/eval/tasks.ts', import.meta.url).href)});
      const out = [];
      for (const args of ${JSON.stringify(calls)}.map((a) => eval(a))) {
        try { drawSample(...args); out.push({ ok: true }); } catch (err) { out.push({ name: err.constructor.name, code: err.code, message: err.message }); }
      }
      console.log(JSON.stringify(out));`;
    return new Promise((resolve, reject) => {
      execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { timeout: 20_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
        if (err) reject(new Error(err.killed ? 'drawSample did not return within 20 s (killed)' : `${err.message} ${stderr.slice(-400)}`));
        else resolve(JSON.parse(stdout.trim().split('\n').pop()!));
      });
    });
  }

  const cases: [string, string, RegExp][] = [
    ['a NaN length', "['needle_single', NaN, 0]", /^drawSample: length must be an integer in \[146, \d+\] for needle_single .*, got NaN$/],
    ['an infinite length', "['passkey', Infinity, 0]", /length must be an integer .*, got Infinity$/],
    ['a length past what one string holds', `['passkey', ${MAX_SAMPLE_LENGTH + 1}, 0]`, new RegExp(`length must be an integer in \\[104, ${MAX_SAMPLE_LENGTH}\\] .*, got ${MAX_SAMPLE_LENGTH + 1}$`)],
    ['a huge length', "['needle_multi', 1e300, 0]", /got 1e\+300$/],
    ['a fractional length', "['passkey', 300.5, 0]", /got 300.5$/],
    ['a length given as a string', "['passkey', '300', 0]", /got "300"$/],
    ['a kv_lookup too short for one pair', "['kv_lookup', 40, 0]", /^drawSample: length must be an integer in \[59, \d+\] for kv_lookup/],
    ['a zero length', "['kv_lookup', 0, 0]", /got 0$/],
    ['a negative index', "['passkey', 300, -1]", /^drawSample: index must be a non-negative integer, got -1$/],
    ['a NaN index', "['passkey', 300, NaN]", /index must be a non-negative integer, got NaN$/],
    ['an unknown split', "['passkey', 300, 0, 'test']", /^drawSample: split must be 'eval' or 'train', got "test"$/],
    ['an unknown task', "['haystack', 300, 0]", /^drawSample: unknown task "haystack"; known: passkey, needle_single, needle_multi, kv_lookup$/],
    ["a task named like an Object method", "['toString', 300, 0]", /unknown task "toString"/],
  ];

  it('every case, typed and at once', async () => {
    const got = await inChild(cases.map(([, args]) => args));
    got.forEach((r, i) => {
      const [label, , message] = cases[i]!;
      expect(r.code, `${label}: ${JSON.stringify(r)}`).toBe('SKV_CONFIG');
      expect(r.message, label).toMatch(message);
    });
  }, 30_000);

  it.each(TASK_NAMES)('%s: at its minimum length every sample fits (prompt, <bos> and answer), one shorter is refused', (task) => {
    const min = minSampleLength(task);
    for (let index = 0; index < 40; index++) {
      const s = drawSample(task, min, index);
      expect(1 + Buffer.byteLength(s.prompt) + Buffer.byteLength(s.answer), `${task} ${index}`).toBeLessThanOrEqual(min);
    }
    expect(() => drawSample(task, min - 1, 0)).toThrow(ConfigError);
  });
});

describe('option messages list what is known and say what a value must be', () => {
  const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
  const CACHE_KEYS = { spec, backend: 'wasm', batch: 2, dtype: 'f32', maxTokens: 64 };
  const rejection = async (call: () => Promise<unknown>) => {
    try {
      await call();
    } catch (err) {
      return err;
    }
    return undefined;
  };

  it.each(listPolicies().flatMap((policy) => Object.entries(CACHE_KEYS).map(([key, value]) => [policy, key, value] as const)))(
    "createCache, policy %s: '%s' inside options is a ConfigError saying it goes beside them",
    async (policy, key, value) => {
      const err = await rejection(() => createCache({ spec, backend: 'wasm', policy, options: { [key]: value } as never }));
      expect(err, showError(err)).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toBe(`createCache: '${key}' in options is an option of every cache, not of policy '${policy}': pass it beside options, with createCache's own (spec, backend, batch, dtype, maxTokens)`);
    },
  );

  it.each(listPolicies())("createCache, policy %s: an unknown key in options lists the policy's own keys apart from every cache's", async (policy) => {
    const err = await rejection(() => createCache({ spec, backend: 'wasm', policy, options: { bogus: 1 } as never }));
    expect(err, showError(err)).toBeInstanceOf(ConfigError);
    const message = (err as Error).message;
    expect(message).toMatch(/: unknown option 'bogus'; \w+(?:'s own: \w+(?:, \w+)*| has none of its own) \(createCache's options\); every cache's: spec, backend, batch, dtype, maxTokens$/);
  });

  it('a list of known keys is never empty: a caller that takes none says so', () => {
    const err = thrown(() => checkKeys('mine options', { window: 4 }, []));
    expect(err, showError(err)).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe("mine options: unknown option 'window'; it takes none");
  });

  // A value is shown as it came: a string quoted (so '2' does not read as the valid 2), anything else as itself.
  it.each([
    ['batch "2"', () => createCache({ spec, backend: 'wasm', batch: '2' as never }), /^batch must be an integer in \[1, 4096\], got "2"$/],
    ['maxTokens "64"', () => createCache({ spec, backend: 'wasm', maxTokens: '64' as never }), /got "64"$/],
    ['dtype 5', () => createCache({ spec, backend: 'wasm', dtype: 5 as never }), /^dtype must be 'f32', 'f16' or 'bf16', got 5$/],
    ["dtype 'f64'", () => createCache({ spec, backend: 'wasm', dtype: 'f64' as never }), /got "f64"$/],
    ['rank "8"', () => createCache({ spec, backend: 'wasm', options: { rank: '8' as never } }), /^rank must be an integer >= 1, got "8"$/],
    ['fp8Values "true"', () => createCache({ spec, backend: 'wasm', options: { fp8Values: 'true' as never } }), /fp8Values must be true or false, got "true"$/],
    ['spec.headDim "16"', () => createCache({ spec: { ...spec, headDim: '16' as never }, backend: 'wasm' }), /^spec.headDim must be an integer in \[1, \d+\], got "16"$/],
    ['spec.rope.style 5', async () => resolveSpec({ ...spec, rope: { theta: 1e4, style: 5 as never } }), /^spec.rope.style must be 'half' or 'interleaved', got 5$/],
    ['estimateMemory policy 5', async () => estimateMemory({ spec, tokens: 10, policy: 5 as never }), /^estimateMemory: policy must be 'shadowkv' or 'full', got 5$/],
    ['estimateMemory tokens "10"', async () => estimateMemory({ spec, tokens: '10' as never }), /got "10"$/],
  ] as [string, () => Promise<unknown>, RegExp][])('%s', async (_, call, message) => {
    const err = await rejection(call);
    expect(err, showError(err)).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(message);
  });
});
