import { expect, it } from 'vitest';
import { at, packIndex, type Device, type PagedBuffer } from '../../packages/shadowkv/src/backend.js';
import { forEachEnv } from '../envs.js';
import { rng } from '../helpers/data.js';

// packValues writes bf16 chunks to host-tier pages with their exponents packed (runtime/wasm/pack.h);
// gatherValues reads them back. Checked against the format as written here from its description
// (not from pack.h): which chunks pack, the bytes of a packed chunk, and every value back bit for
// bit, raw chunks, zeros, subnormals, inf and NaN included; n a multiple of 8 (8 values a load) and
// not, odd n too.
const [pageChunks, heads, nPages] = [3, 2, 2]; // 6 chunks per head

const exponent = (v: number) => (v >> 7) & 0xff;

/** The format's base of a chunk: its largest exponent field, or 255 (raw) where a value does not fit 15 binades below it. */
function baseOf(bits: Uint16Array): number {
  const top = Math.max(0, ...Array.from(bits, exponent));
  return bits.every((v) => exponent(v) === 0 || (exponent(v) !== 0xff && exponent(v) >= top - 14)) ? top : 0xff;
}

/** A packed chunk's bytes: sign and mantissa of each value, then 4-bit codes (base - exponent; 15 for exponent 0), low nibble first. */
function packedBytes(bits: Uint16Array, base: number): Uint8Array {
  const n = bits.length, out = new Uint8Array(n + Math.ceil(n / 2));
  bits.forEach((v, j) => {
    out[j] = ((v >> 8) & 0x80) | (v & 0x7f);
    out[n + (j >> 1)]! |= (exponent(v) === 0 ? 15 : base - exponent(v)) << (4 * (j % 2));
  });
  return out;
}

/** Chunk c's bf16 bits: random values of one scale, and per chunk something that decides its form. */
function chunkBits(c: number, n: number): Uint16Array {
  const r = rng(300 + c);
  const bits = Uint16Array.from({ length: n }, () => {
    const f = new Float32Array([(r() * 2 - 1) * 2 ** (c % 5)]);
    return new Uint16Array(f.buffer)[1]!;
  });
  const special = [
    () => {}, // packed as drawn
    () => (bits[1] = 0x0001), // a subnormal: packs (exponent 0)
    () => (bits[n - 1] = 0x0080), // the smallest normal beside values near 1: raw
    () => bits.fill(0x8000), // -0 everywhere: base 0, all codes 15
    () => (bits[0] = 0x7f80), // +inf: raw
    () => (bits[n >> 1] = 0x7fc1), // NaN: raw
    () => { bits.forEach((_, j) => (bits[j] = 0x7f00 | (j % 2 ? 0x8000 : 0) | (j & 0x7f))); bits[0] = 0x7800; }, // the top exponent field (254), and one 14 below it
  ];
  special[c % special.length]!();
  return bits;
}

/** The bases' bytes, read back. */
function basesOf(device: Device, p: PagedBuffer): Uint8Array {
  const words = device.read(at(p.bases!), p.bases!.length) as Int32Array;
  return new Uint8Array(words.buffer, words.byteOffset, words.byteLength).slice();
}

/** Pages of bf16 slots for every head, and their bases (one byte a chunk), as a store makes them. */
function tier(device: Device, n: number): PagedBuffer {
  const pages = Array.from({ length: nPages * heads }, () => device.alloc(pageChunks * n, 'bf16', 'test', 'host'));
  const bases = device.alloc(Math.ceil((nPages * heads * pageChunks) / 4), 'i32', 'test');
  return { pageChunks, block: n, heads, dtype: 'bf16', pages, table: device.pointerTable(pages, 'test'), bases };
}

forEachEnv('packValues + gatherValues (packed pages)', (env) => {
  it.each([[4, 16], [8, 128], [3, 6], [1, 3]])('C %i, d %i: chunks pack as the format says and read back bit for bit, in any slot order', (C, d) => {
    const device = env.instance.createDevice();
    const n = C * d;
    const paged = tier(device, n);
    const want = new Map<string, Uint16Array>();
    const forms = new Set<string>();
    for (let h = 0; h < heads; h++) {
      for (let c = 0; c < pageChunks * nPages; c++) {
        const bits = chunkBits(c * heads + h, n);
        want.set(`${h}/${c}`, bits);
        const src = device.alloc(n, 'bf16', 'test');
        device.write(at(src), bits);
        const page = paged.pages[Math.floor(c / pageChunks) * heads + h]!;
        device.packValues!({ buf: page, offset: (c % pageChunks) * n }, at(src), 1, n, paged.bases!, packIndex(paged, h, c));
        const base = baseOf(bits);
        expect(basesOf(device, paged)[packIndex(paged, h, c)], `base of head ${h} chunk ${c}`).toBe(base);
        const stored = device.read({ buf: page, offset: (c % pageChunks) * n } as never, n) as Uint16Array;
        const bytes = new Uint8Array(stored.buffer, stored.byteOffset, 2 * n);
        if (base === 0xff) expect(Array.from(stored), `raw chunk ${h}/${c}`).toEqual(Array.from(bits));
        else expect(Array.from(bytes.subarray(0, n + Math.ceil(n / 2))), `packed chunk ${h}/${c}`).toEqual(Array.from(packedBytes(bits, base)));
        forms.add(base === 0xff ? 'raw' : base === 0 ? 'zero base' : 'packed');
      }
    }
    expect([...forms].sort()).toEqual(['packed', 'raw', 'zero base']);
    const ids = Int32Array.of(3, 0, 5, 2, 1, 4);
    const slots = Int32Array.of(1, 3, 0, 2, 5, 4);
    for (let h = 0; h < heads; h++) {
      const dst = device.alloc(ids.length * n, 'bf16', 'test');
      device.gatherValues(at(dst), paged, h, ids, slots);
      const got = device.read(at(dst) as never, ids.length * n) as Uint16Array;
      ids.forEach((c, i) => expect(Array.from(got.subarray(slots[i]! * n, (slots[i]! + 1) * n)), `head ${h} chunk ${c}`).toEqual(Array.from(want.get(`${h}/${c}`)!)));
    }
  });

  it('several chunks in one call go to consecutive slots and bases, as one at a time', () => {
    const device = env.instance.createDevice();
    const n = 64, chunks = pageChunks;
    const many = tier(device, n), one = tier(device, n);
    const all = new Uint16Array(chunks * n);
    for (let c = 0; c < chunks; c++) all.set(chunkBits(c, n), c * n);
    const src = device.alloc(chunks * n, 'bf16', 'test');
    device.write(at(src), all);
    device.packValues!(at(many.pages[0]!), at(src), chunks, n, many.bases!, 0);
    for (let c = 0; c < chunks; c++) device.packValues!(at(one.pages[0]!, c * n), at(src, c * n), 1, n, one.bases!, c);
    const ids = Int32Array.from({ length: chunks }, (_, c) => c);
    const read = (p: PagedBuffer) => {
      const dst = device.alloc(chunks * n, 'bf16', 'test');
      device.gatherValues(at(dst), { ...p, heads: 1 }, 0, ids, ids); // head 0's first page, as a one-head tier
      return [Array.from(device.read(at(dst) as never, chunks * n) as Uint16Array), Array.from(basesOf(device, p).subarray(0, chunks))];
    };
    expect(read(many)).toEqual(read(one));
    expect(read(many)[0]).toEqual(Array.from(all));
  });
}, (e) => e.dtype === 'bf16');
