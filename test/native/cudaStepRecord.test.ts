import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, FullKVCache, type DeviceBuffer, type DType, type LayerStep, type StepRow } from '../../packages/shadowkv/src/backend.js';
import { addonCandidates, CudaDevice, probeAddon, type CudaAddon } from '../../packages/shadowkv-cuda/src/index.js';
import { loadAddon } from '../../packages/shadowkv-cuda/src/loadAddon.js';
import { DTYPE_CODE } from '../../packages/shadowkv/src/backends/codes.js';
import { ROW_BYTES, STATUS, STEP_BYTES, type AddonError } from '../../packages/shadowkv-cuda/src/AddonTypes.js';
import { stubAddon, stubCache } from '../helpers/stubAddon.js';

// The step record CudaDevice.decodeLayer hands the addon, read back field by field at the offsets of
// SkvStep and SkvStepRow (kernels/launchers.h), with a stub addon: no GPU needed. Addresses above
// 2^32 check both halves of each 64-bit word. Then the built addon's decodeLayer on such records:
// malformed host inputs are refused before any CUDA call (so on any machine), and well-formed ones
// get as far as the first CUDA call (only without a GPU: with one, the made-up addresses would run).
let n = 0;
const buffer = (dtype: DeviceBuffer['dtype'] = 'bf16'): DeviceBuffer => ({ ptr: 0x1_2345_0000 * 3 + 4096 * ++n, length: 1 << 20, dtype, tag: 't', tier: 'device' });
const at = (buf: DeviceBuffer, offset = 0) => ({ buf, offset });
/** The arguments CudaDevice.decodeLayer hands the addon for `step` (a stub addon; the record copied). */
function addonArgs(step: LayerStep): [Uint8Array, ...(Float32Array | Uint16Array)[]] {
  let args: unknown[] = [];
  const stub = new Proxy({} as CudaAddon, { get: (_t, name) => (name === 'decodeLayer' ? (...a: unknown[]) => ((args = a), 0) : () => 0) });
  new CudaDevice(stub, 0).decodeLayer(step);
  const [record, ...inputs] = args as [Uint8Array, ...(Float32Array | Uint16Array)[]];
  return [record.slice(), ...inputs];
}

describe('the CUDA step record (stub addon, no GPU)', () => {
  it('holds every field of the step and of each row where kernels/launchers.h puts it, and the host inputs as three arrays', () => {
    const qkv = buffer('f32');
    const store = {
      tokens: 4096, rank: 160, chunkCapacity: 777, u: buffer(), sv: buffer(), proj: buffer(), landmarks: buffer(), landmarkIds: buffer('i32'),
      headCounts: buffer('i32'), outlierK: buffer(), outlierV: buffer(), selectedK: buffer(), selectedV: buffer(), selectedIds: buffer('i32'),
      values: { pageChunks: 512, block: 1024, heads: 8, dtype: 'bf16' as const, fp8Rows: 8, pages: [], table: buffer('f64'), bases: buffer('i32') },
      hot: { slots: 2048, ids: buffer('i32'), v: buffer() },
    };
    const rows: StepRow[] = [
      { input: 1, position: 70000, tail: { k: buffer(), v: buffer(), capacity: 96, count: 40 }, store, compact: true },
      { input: -1, position: 12, tail: { k: buffer(), v: buffer(), capacity: 32, count: 11 }, compact: false },
    ];
    const geometry = { queryHeads: 32, kvHeads: 8, headDim: 128, chunkSize: 8, maxSelected: 256, maxOutliers: 48, localTokens: 4, scale: 0.088, scoreScale: 0.05, ropeStyle: 'interleaved' as const, invFreq: buffer('f64'), dtype: 'bf16' as const };
    const host = [new Float32Array(2 * 32 * 128), new Float32Array(2 * 8 * 128), new Float32Array(2 * 8 * 128)] as const;
    const step: LayerStep = { geometry, ioDtype: 'f32', q: at(qkv), k: at(qkv, 8192), v: at(qkv, 10240), out: at(buffer('f32'), 5), counters: buffer('f64'), rows, hostInputs: host };
    const [record, q, k, v] = addonArgs(step);
    expect([q, k, v]).toEqual([host[0], host[1], host[2]]);
    expect(record.byteLength).toBe(STEP_BYTES + 2 * ROW_BYTES);
    const dv = new DataView(record.buffer, record.byteOffset, record.byteLength);
    const u64 = (o: number) => Number(dv.getBigUint64(o, true));
    const i32 = (o: number) => dv.getInt32(o, true);
    expect([0, 1, 2, 3, 4, 5].map((w) => u64(8 * w))).toEqual([geometry.invFreq.ptr, qkv.ptr, qkv.ptr + 4 * 8192, qkv.ptr + 4 * 10240, step.out.buf.ptr + 4 * 5, step.counters.ptr]);
    expect([12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22].map((w) => i32(4 * w))).toEqual([2, 32, 8, 128, 8, 256, 48, 4, 2, 0, 1]); // bf16 = 2, f32 = 0, interleaved = 1
    expect([dv.getFloat32(92, true), dv.getFloat32(96, true)]).toEqual([Math.fround(0.088), Math.fround(0.05)]);
    const o = STEP_BYTES;
    const s = store;
    expect(Array.from({ length: 17 }, (_, w) => u64(o + 8 * w))).toEqual([rows[0]!.tail.k.ptr, rows[0]!.tail.v.ptr, s.u.ptr, s.sv.ptr, s.proj.ptr, s.landmarks.ptr, s.landmarkIds.ptr, s.headCounts.ptr,
      s.outlierK.ptr, s.outlierV.ptr, s.selectedK.ptr, s.selectedV.ptr, s.selectedIds.ptr, s.values.table.ptr, s.hot.ids.ptr, s.hot.v.ptr, s.values.bases.ptr]);
    expect(Array.from({ length: 12 }, (_, w) => i32(o + 136 + 4 * w))).toEqual([1, 70000, 40, 96, 4096, 160, 777, 1, 512, 2048, 8, 0]);
    const d = STEP_BYTES + ROW_BYTES; // a dense row sitting out: its tail, and zeros for the store
    expect(Array.from({ length: 17 }, (_, w) => u64(d + 8 * w))).toEqual([rows[1]!.tail.k.ptr, rows[1]!.tail.v.ptr, ...Array(15).fill(0)]);
    expect(Array.from({ length: 12 }, (_, w) => i32(d + 136 + 4 * w))).toEqual([-1, 12, 11, 32, 0, 0, 0, 0, 0, 0, 0, 0]);
  });

// The address and copy tables CudaDevice hands the addon (the host pages' table a store's values are
// read through, a row's value copies at compression), with a stub addon that records its calls.
describe('CudaDevice tables (stub addon, no GPU)', () => {
  const recording = () => {
    const calls: [string, unknown[]][] = [];
    let next = 0x3_0000_0000;
    const stub = new Proxy({} as CudaAddon, {
      get: (_t, name) => (...a: unknown[]) => {
        calls.push([String(name), a.map((x) => (ArrayBuffer.isView(x) ? (x as Uint8Array).slice() : x))]);
        return name === 'malloc' || name === 'hostAlloc' ? (next += 0x10_0000) : 0;
      },
    });
    return { device: new CudaDevice(stub, 0), calls };
  };

  it('pointerTable writes each address as a little-endian 64-bit word, addresses above 2^32 included', () => {
    const { device, calls } = recording();
    const pages = [buffer(), buffer('f32'), { ...buffer(), ptr: 2 ** 52 + 12345 * 256 }];
    const table = device.pointerTable(pages, 'test');
    const [, [ptr, words]] = calls.find(([name]) => name === 'write')! as [string, [number, ArrayBufferView]];
    expect(ptr).toBe(table.ptr);
    expect(Array.from(new BigUint64Array(words.buffer, words.byteOffset, pages.length), Number)).toEqual(pages.map((b) => b.ptr));
    expect(words.byteLength).toBe(8 * pages.length);
  });

  it('copyAlongside hands (destination, source, bytes) per copy, and refuses a copy out of bounds before issuing any', () => {
    const { device, calls } = recording();
    const [a, b] = [buffer(), buffer()];
    device.copyAlongside([{ dst: at(a, 8), src: at(b, 1024), length: 512 }, { dst: at(b), src: at(a, 4096), length: 0 }]);
    const [, [table]] = calls.find(([name]) => name === 'copyAside')! as [string, [Float64Array]];
    expect(Array.from(table)).toEqual([a.ptr + 16, b.ptr + 2048, 1024, b.ptr, a.ptr + 8192, 0]);
    calls.length = 0;
    const copies = [{ dst: at(a), src: at(b), length: 16 }, { dst: at(a, (1 << 20) - 8), src: at(b), length: 16 }];
    expect(() => device.copyAlongside(copies)).toThrow(/^copyAlongside: the destination of copy 1 needs elements \[1048568, 1048584\) of a buffer of 1048576/);
    expect(() => device.copyAlongside([{ dst: at(a), src: at(b, -1), length: 4 }])).toThrow(/the source of copy 0 needs elements \[-1, 3\)/);
    expect(calls.map(([name]) => name)).not.toContain('copyAside');
  });
});
});

// A spec whose heads need more shared memory a block than the GPU has (the addon's specFits, as
// its kernels size it) is refused by the cache's constructor before anything is allocated, and
// the device it made is released. test/badInput/cudaSpecLimits.test.ts runs it on a GPU.
describe('a spec past the shared memory of a block (stub addon, no GPU)', () => {
  const fit = { kernel: 'decode attention', need: 300 * 1024, limit: 227 * 1024 };
  const run = (queryHeads: number) => {
    const { addon, calls } = stubAddon({ specFits: (...a) => (a[0] === 32 && a[1] === 1 && a[2] === 512 ? fit : null) });
    const spec = { layers: 1, queryHeads, kvHeads: 1, headDim: 512, rope: { theta: 10000 } };
    const made = (() => {
      try {
        return stubCache(spec, addon);
      } catch (e) {
        return e as Error;
      }
    })();
    return { made, calls };
  };

  it('is a ConfigError naming the kernel, the bytes and the limit, with no allocation; a spec that fits is made', () => {
    const { made, calls } = run(32);
    expect(made).toBeInstanceOf(ConfigError);
    expect((made as ConfigError).code).toBe('SKV_CONFIG');
    expect((made as Error).message).toBe(
      "spec: 32 query heads and 1 kv heads of 512 dims need 300.0 KiB of shared memory a block in decode attention on CUDA device 0, which allows 227.0 KiB; use backend 'wasm' for this model",
    );
    expect(calls.filter((c) => c === 'malloc' || c === 'hostAlloc')).toEqual([]);
    const ok = run(16);
    expect(ok.made).toBeInstanceOf(FullKVCache);
    expect(ok.calls.indexOf('specFits')).toBeLessThan(ok.calls.indexOf('malloc'));
  });
});

const built = addonCandidates().find((c) => existsSync(c.path));
const probe = built ? await probeAddon(built.path) : undefined;
const gpu = probe?.stage === 'ok' && (probe.count ?? 0) > 0;

describe.skipIf(!built)(`the addon's decodeLayer and its host inputs${built ? '' : ' skipped: the shadowkv-cuda addon is not built'}`, () => {
  // A record of two dense rows (inputs 1 and 0: R = 2) for 4 query heads and 2 kv heads of 8, inputs of `io`.
  const record = (io: DType): Uint8Array => {
    const geometry = { queryHeads: 4, kvHeads: 2, headDim: 8, chunkSize: 8, maxSelected: 0, maxOutliers: 0, localTokens: 0, scale: 0.3, scoreScale: 0.3, ropeStyle: 'half' as const, invFreq: buffer('f64'), dtype: 'bf16' as const };
    const row = (input: number): StepRow => ({ input, position: 5, tail: { k: buffer(), v: buffer(), capacity: 16, count: 5 }, compact: false });
    const q = at(buffer(io));
    return addonArgs({ geometry, ioDtype: io, q, k: q, v: q, out: at(buffer(io)), counters: buffer('f64'), rows: [row(1), row(0)] })[0];
  };
  const call = (...args: unknown[]) => (loadAddon(built!.path).decodeLayer as (...a: unknown[]) => number)(...args);
  /** Refused (SKV_ERR_ARG), or taken as far as the first CUDA call (which throws: no GPU). */
  const outcome = (...args: unknown[]): 'refused' | 'taken' => {
    try {
      expect(call(...args)).toBe(STATUS.arg);
      return 'refused';
    } catch (e) {
      if ((e as AddonError).op !== 'decodeLayer' || !((e as AddonError).cudaCode! > 0)) throw e;
      return 'taken';
    }
  };

  it.each(['f32', 'f16', 'bf16'] as const)('%s inputs: refuses other row counts, rows not whole and a row input past them (SKV_ERR_ARG)', (io) => {
    const f = (n: number) => (io === 'f32' ? new Float32Array(n) : new Uint16Array(n));
    const r = record(io);
    expect(call(r, f(64), f(48), f(32))).toBe(STATUS.arg); // k holds 3 rows, q and v 2
    expect(call(r, f(65), f(32), f(32))).toBe(STATUS.arg); // q not whole rows of 4 x 8
    expect(call(r, f(32), f(16), f(16))).toBe(STATUS.arg); // 1 row, but a row's input is 1
    expect(() => call(r, f(64), f(32))).toThrow(/expected 1, 4 or 5 arguments, got 3/);
    expect(() => call(r, f(64), f(32), f(32), -1)).toThrow(/ticket/); // stageStepInputs' tickets are positive
    expect(() => call(r, [0], f(32), f(32))).toThrow(/expected a typed array/);
  });

  it('stageStepInputs refuses arrays of another dtype and limits that are not three numbers, before any CUDA call', () => {
    const stage = (...args: unknown[]) => (loadAddon(built!.path).stageStepInputs as (...a: unknown[]) => number)(...args);
    const [f, h] = [new Float32Array(8), new Uint16Array(8)];
    expect(() => stage(f, f, h, DTYPE_CODE.f32, null)).toThrow(/stageStepInputs: the array does not hold the dtype's elements/);
    expect(() => stage(h, h, h, DTYPE_CODE.f32, null)).toThrow(TypeError);
    expect(() => stage(f, f, f, DTYPE_CODE.bf16, null)).toThrow(TypeError);
    expect(() => stage(h, h, h, DTYPE_CODE.bf16, new Float64Array(2))).toThrow(/limits/);
    expect(() => stage(h, h, h, DTYPE_CODE.bf16, [1, 2, 3])).toThrow(/limits/);
    expect(() => stage(h, h, h, DTYPE_CODE.bf16)).toThrow('stageStepInputs: expected 5 arguments, got 4');
  });

  // Every combination of 0-3 rows (and a stray element) per input, for each io dtype: taken exactly
  // when all three hold the same whole number of rows, at least 2 (the rows' inputs are 0 and 1).
  it.skipIf(gpu)('takes inputs exactly when they hold whole, equal row counts past every input (generated, each io dtype; no GPU here)', () => {
    for (const io of ['f32', 'f16', 'bf16'] as const) {
      const r = record(io);
      const make = (n: number) => (io === 'f32' ? new Float32Array(n) : new Uint16Array(n));
      const sizes = [0, 1, 2, 3].flatMap((rows) => [{ rows, extra: 0 }, { rows, extra: 1 }]);
      for (const q of sizes) for (const k of sizes) for (const v of sizes) {
        const ok = !q.extra && !k.extra && !v.extra && q.rows === k.rows && k.rows === v.rows && q.rows >= 2;
        const got = outcome(r, make(q.rows * 32 + q.extra), make(k.rows * 16 + k.extra), make(v.rows * 16 + v.extra));
        expect(got, `${io}: q ${JSON.stringify(q)}, k ${JSON.stringify(k)}, v ${JSON.stringify(v)}`).toBe(ok ? 'taken' : 'refused');
      }
    }
  });
});
