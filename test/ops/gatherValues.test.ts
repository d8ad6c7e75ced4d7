import { expect, it } from 'vitest';
import { at, type PagedBuffer } from '../../packages/shadowkv/src/backend.js';
import { forEachEnv, type TestEnv } from '../envs.js';
import { get, put, rounded, zerosOn } from '../helpers/device.js';
import { randn, rng } from '../helpers/data.js';

// gatherValues: chunk c of head h lives in page floor(c / pageChunks) * heads + h, at (c % pageChunks) * block.
const [pageChunks, heads, block, nPages] = [3, 2, 8, 4]; // 12 chunks per head

/** A paged buffer of random rows on `env`'s device, and the rows each (head, chunk) should hold. */
function pagedOn(env: TestEnv) {
  const device = env.instance.createDevice();
  const data = Array.from({ length: nPages * heads }, (_, p) => rounded(randn(pageChunks * block, rng(p + 1)), env.dtype));
  const bufs = data.map((d) => put(device, d, env.dtype));
  const pages: PagedBuffer = { pageChunks, block, heads, dtype: env.dtype, pages: bufs, table: device.pointerTable(bufs, 'test') };
  const chunk = (h: number, c: number) => data[Math.floor(c / pageChunks) * heads + h]!.subarray((c % pageChunks) * block, ((c % pageChunks) + 1) * block);
  return { device, pages, chunk };
}

forEachEnv('gatherValues', (env) => {
  it('copies each chunk of a head to its slot, across pages, in any order', () => {
    const { device, pages, chunk } = pagedOn(env);
    const ids = Int32Array.of(11, 0, 5, 3, 7, 2, 10);
    const slots = Int32Array.of(0, 6, 2, 1, 4, 3, 5);
    for (const h of [0, 1]) {
      const dst = zerosOn(device, 7 * block, env.dtype);
      device.gatherValues(at(dst), pages, h, ids, slots);
      const got = get(device, dst);
      ids.forEach((c, i) => expect(Array.from(got.subarray(slots[i]! * block, (slots[i]! + 1) * block)), `head ${h} chunk ${c}`).toEqual(Array.from(chunk(h, c))));
    }
  });
});

// CUDA checks the ids before its kernel reads through the page table (a wasm read stays in its heap).
forEachEnv('gatherValues bounds', (env) => {
  it('a chunk past the pages, a bad head or a negative slot is a RangeError naming it, before any copy', () => {
    const { device, pages } = pagedOn(env);
    const dst = zerosOn(device, 8 * block, env.dtype);
    const before = Array.from(get(device, dst));
    const bad: [number, Int32Array, Int32Array, RegExp][] = [
      [0, Int32Array.of(1, 12, 2), Int32Array.of(0, 1, 2), /chunk 12 of head 0 is past the 8 pages/],
      [1, Int32Array.of(3, -1), Int32Array.of(0, 1), /chunk -1 of head 1 is past/],
      [2, Int32Array.of(3, 4), Int32Array.of(0, 1), /chunk 3 of head 2 is past/],
      [0, Int32Array.of(3, 4, 5), Int32Array.of(0, 1, -2), /negative slot at 2/],
    ];
    for (const [h, ids, slots, message] of bad) expect(() => device.gatherValues(at(dst), pages, h, ids, slots)).toThrow(message);
    expect(() => device.gatherValues(at(dst), pages, 0, Int32Array.of(1, 2), Int32Array.of(0, 8))).toThrow(RangeError); // slot 8 is past dst
    expect(Array.from(get(device, dst))).toEqual(before);
  });
}, (e) => e.name.startsWith('cuda'));
