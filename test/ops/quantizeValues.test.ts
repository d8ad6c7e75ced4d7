import { expect, it } from 'vitest';
import { at, type PagedBuffer } from '../../packages/shadowkv/src/backend.js';
import { fp8ChunkBytes } from '../../packages/shadowkv/src/backends/Device.js';
import { forEachEnv, type TestEnv } from '../envs.js';
import { get, put, rounded, zerosOn } from '../helpers/device.js';
import { randn, rng } from '../helpers/data.js';
import { fp8Row } from '../oracle/fp8.js';

// quantizeValues writes fp8 chunks to host-tier pages; gatherValues reads them back dequantized. Both
// against the float64 format of test/oracle/fp8.ts, exactly: rows of every magnitude (zero, tiny,
// large, mixed within a row), d a multiple of 16 (16 codes a load) and not (value by value).
const [pageChunks, heads, nPages] = [2, 2, 2]; // 4 chunks per head

/** Row t of chunk c: random values over a magnitude that varies by row, a zero row among them. */
function chunkValues(c: number, C: number, d: number, dtype: TestEnv['dtype']): Float64Array {
  const x = randn(C * d, rng(100 + c));
  const scales = [0, 1, 1e-3, 300, 500, 1e-7, 0.5, 7];
  for (let t = 0; t < C; t++) for (let j = 0; j < d; j++) x[t * d + j]! *= scales[(t + c) % scales.length]! * (j === 0 ? 20 : 1);
  return rounded(x, dtype);
}

forEachEnv('quantizeValues + gatherValues (fp8 pages)', (env) => {
  it.each([[4, 16], [8, 32], [3, 6]])('C %i, d %i: the codes read back as the format says, in any slot order', (C, d) => {
    const device = env.instance.createDevice();
    const block = C * d, words = fp8ChunkBytes(C, d) / 4;
    const pages = Array.from({ length: nPages * heads }, () => device.alloc(pageChunks * words, 'i32', 'test', 'host'));
    const paged: PagedBuffer = { pageChunks, block, heads, dtype: env.dtype, fp8Rows: C, pages, table: device.pointerTable(pages, 'test') };
    const want = new Map<string, Float64Array>();
    for (let h = 0; h < heads; h++) {
      for (let c = 0; c < pageChunks * nPages; c++) {
        const values = chunkValues(c * heads + h, C, d, env.dtype);
        const src = put(device, values, env.dtype);
        device.quantizeValues!({ buf: pages[Math.floor(c / pageChunks) * heads + h]!, offset: (c % pageChunks) * words }, at(src), 1, C, d);
        const rows = Array.from({ length: C }, (_, t) => fp8Row(values.subarray(t * d, (t + 1) * d)));
        want.set(`${h}/${c}`, rounded(rows.flatMap((r) => Array.from(r)), env.dtype));
      }
    }
    const ids = Int32Array.of(3, 0, 2, 1);
    const slots = Int32Array.of(1, 3, 0, 2);
    for (let h = 0; h < heads; h++) {
      const dst = zerosOn(device, ids.length * block, env.dtype);
      device.gatherValues(at(dst), paged, h, ids, slots);
      const got = get(device, dst);
      ids.forEach((c, i) => expect(Array.from(got.subarray(slots[i]! * block, (slots[i]! + 1) * block)), `head ${h} chunk ${c}`).toEqual(Array.from(want.get(`${h}/${c}`)!)));
    }
  });

  it('several chunks in one call are chunk-contiguous, each with its own row scales', () => {
    const device = env.instance.createDevice();
    const [C, d, n] = [4, 16, 3];
    const words = fp8ChunkBytes(C, d) / 4;
    const values = Float64Array.from(Array.from({ length: n }, (_, c) => Array.from(chunkValues(c, C, d, env.dtype))).flat());
    const many = device.alloc(n * words, 'i32', 'test', 'host');
    device.quantizeValues!(at(many), at(put(device, values, env.dtype)), n, C, d);
    for (let c = 0; c < n; c++) {
      const one = device.alloc(words, 'i32', 'test', 'host');
      device.quantizeValues!(at(one), at(put(device, values.subarray(c * C * d, (c + 1) * C * d), env.dtype)), 1, C, d);
      expect(Array.from(device.read({ buf: many, offset: c * words }, words) as Int32Array), `chunk ${c}`).toEqual(Array.from(device.read(at(one), words) as Int32Array));
    }
  });
});
