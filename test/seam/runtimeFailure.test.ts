import { describe, expect, it } from 'vitest';
import {
  at, createCache, OutOfMemoryError, toFloat32, type DeviceBuffer, type ShadowKVCache, type WasmDevice, type WasmExports,
} from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';

// Out of memory inside the wasm runtime, on a heap filled to its 4 GB end (address space only: the
// filler is never touched, so the process stays small). A trap inside an op skips the runtime's
// C++ destructors: the device puts the stack pointer and the scratch arena back, so once memory
// is freed it computes what a device that never trapped computes. A decode step that cannot get
// its scratch fails before changing anything.
const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
const options = { budget: 512, rank: 8, chunkSize: 8, localTokens: 8, maxRecentTokens: 16, denseThreshold: 600 };

const deviceOf = (cache: ShadowKVCache) => (cache as unknown as { device: WasmDevice }).device;
const exportsOf = (device: WasmDevice) => (device as unknown as { instance: WasmExports }).instance;

/** Allocates until the heap is full, largest blocks first (from 256 MB down to 16 bytes). */
function fillHeap(device: WasmDevice): DeviceBuffer[] {
  const held: DeviceBuffer[] = [];
  for (let floats = 2 ** 26; floats >= 4; floats /= 2) {
    for (;;) {
      try {
        held.push(device.alloc(floats, 'f32', 'filler'));
      } catch (err) {
        if (err instanceof OutOfMemoryError) break;
        throw err;
      }
    }
  }
  return held;
}

/**
 * Two caches fed the same tokens: `a` is driven out of memory, `b` is the reference. Both hold a
 * 599-token prompt and have run one (dense) step; `compress()` then compresses both.
 */
async function twins() {
  const work = new NeedleWorkload(spec, { tokens: 599, seed: 21 });
  const prompt = work.prompt(0, 1);
  const steps = Array.from({ length: 8 }, () => work.step(0, 1));
  const make = async () => {
    const cache = (await createCache({ spec, batch: 1, dtype: 'bf16', backend: 'wasm', options })) as ShadowKVCache;
    cache.prefill(0, prompt);
    cache.decode(0, steps[0]!);
    cache.compress();
    return cache;
  };
  const a = await make();
  const b = await make();
  const decode = (cache: ShadowKVCache, i: number) => Array.from(toFloat32(cache.decode(0, steps[i]!)));
  return { a, b, decode };
}

describe('out of memory inside the wasm runtime', () => {
  it('a trap inside an op is an OutOfMemoryError; once memory is freed the device works as one that never trapped', async () => {
    const { a, b, decode } = await twins();
    expect(decode(a, 1)).toEqual(decode(b, 1));
    // Causal attention with d = 1024 needs more scratch than either arena holds.
    const d = 1024;
    const inputs = (device: WasmDevice) => {
      const bufs = [0, 1, 2, 3].map(() => device.alloc(3 * d, 'f32', 'test'));
      bufs.slice(0, 3).forEach((buf, j) => device.write(at(buf), Float32Array.from({ length: 3 * d }, (_, i) => Math.sin(i * (j + 1) * 0.37))));
      return bufs;
    };
    const attend = (device: WasmDevice, [q, k, v, out]: DeviceBuffer[]) => {
      device.causalAttention(at(q!), 1, 3, d, 1 / 32, 0, at(k!), at(v!), at(out!));
      return Array.from(device.read({ buf: out!, offset: 0 } as never, 3 * d) as Float32Array);
    };
    const device = deviceOf(a);
    const x = exportsOf(device);
    const mine = inputs(device);
    const stackTop = x.stackSave?.();
    const filler = fillHeap(device);
    let error: unknown;
    try {
      attend(device, mine);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(OutOfMemoryError);
    expect((error as Error).message).toMatch(/causal_attention: the wasm runtime trapped/);
    if (stackTop !== undefined) expect(x.stackSave!()).toBe(stackTop);
    filler.forEach((buf) => device.free(buf));
    expect(attend(device, mine)).toEqual(attend(deviceOf(b), inputs(deviceOf(b))));
    for (let i = 2; i < 8; i++) expect(decode(a, i), `step ${i}`).toEqual(decode(b, i));
    expect(Buffer.from(a.save()).equals(Buffer.from(b.save()))).toBe(true);
    a.dispose();
    b.dispose();
  }, 30_000);

  it('a decode step whose scratch does not fit the heap is an OutOfMemoryError and changes nothing', async () => {
    const { a, b, decode } = await twins();
    // The first compressed step needs more scratch (rebuilding up to 62 chunks) than the dense
    // step reserved, and the full heap cannot grow the arena: the runtime says SKV_ERR_ALLOC.
    const before = Buffer.from(a.save());
    const device = deviceOf(a);
    const filler = fillHeap(device);
    let error: unknown;
    try {
      decode(a, 1);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(OutOfMemoryError);
    expect((error as Error).message).toMatch(/decode_layer: the wasm heap could not hold the step's scratch/);
    filler.forEach((buf) => device.free(buf));
    expect(Buffer.from(a.save()).equals(before)).toBe(true);
    for (let i = 1; i < 8; i++) expect(decode(a, i), `step ${i}`).toEqual(decode(b, i));
    expect(Buffer.from(a.save()).equals(Buffer.from(b.save()))).toBe(true);
    a.dispose();
    b.dispose();
  }, 30_000);
});
